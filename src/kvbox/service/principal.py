"""Who is calling: a user (through one of their tokens) or nobody."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from kvbox.backends.base import MetadataIndex
from kvbox.core.errors import InvalidTokenError
from kvbox.core.models import Token, User
from kvbox.service.readcache import ReadCache


@dataclass(frozen=True, slots=True)
class Principal:
    user: User | None = None
    token: Token | None = None

    @property
    def is_anonymous(self) -> bool:
        return self.user is None


ANONYMOUS = Principal()
MAX_CLAIMS = 10_000
MAX_HASHED = 4096
_hashed: dict[str, str] = {}


def hash_token(token: str) -> str:
    """A token's stored form (SHA-256, hex). The latest few thousand are remembered: a hash
    costs a few microseconds of OpenSSL set-up on a busy request path, a lookup a few dozen
    nanoseconds."""
    found = _hashed.get(token)
    if found is None:
        found = hashlib.sha256(token.encode()).hexdigest()
        if len(_hashed) >= MAX_HASHED:
            _hashed.clear()
        _hashed[token] = found
    return found


class Authenticator:
    """Turns a presented API token into a Principal. Only token hashes are stored."""

    def __init__(self, index: MetadataIndex, cache: ReadCache | None = None) -> None:
        self._index = index
        self._cache = cache or ReadCache(index)
        # Principals by token hash, kept without checking the index: only `claim` hands them
        # out, to requests that confirm them in their own round trip.
        self._claims: dict[str, Principal] = {}

    async def claim(self, token: str | None) -> Principal:
        """The caller, for a request that confirms every row it decides on in the same round
        trip as its work (the record path on an index shared by nodes, see `confirmed`). There
        the principal may come from a process-local map, possibly stale; elsewhere this is
        `authenticate`."""
        if token is None or not self._index.shared_by_nodes:
            return await self.authenticate(token)
        if not token or len(token) > 512:
            raise InvalidTokenError()
        presented = hash_token(token)
        principal = self._claims.get(presented)
        if principal is None:
            principal = await self.authenticate(token)
            if len(self._claims) >= MAX_CLAIMS:
                self._claims.clear()
            self._claims[presented] = principal
        return principal

    def confirmed(self, claimed: Principal, token: Token | None, user: User | None) -> Principal:
        """The caller as the rows read with its request show it: `token` (found by the claimed
        token's hash) and its `user`. A token gone meanwhile raises `InvalidTokenError`."""
        if claimed.token is None:  # nobody, or a user acting in-process without a token
            return claimed
        if token is None or user is None or not hmac.compare_digest(token.token_hash, claimed.token.token_hash):
            self._claims.pop(claimed.token.token_hash, None)
            raise InvalidTokenError()
        if token == claimed.token and user == claimed.user:
            return claimed
        return Principal(user=user, token=token)

    async def refresh(self, claimed: Principal) -> Principal:
        """The caller read anew from the index (after a write found its rows changed)."""
        if claimed.token is None:
            return claimed
        presented = claimed.token.token_hash
        self._claims.pop(presented, None)
        principal = await self._load(presented)
        if principal is None:
            raise InvalidTokenError()
        return principal

    async def authenticate(self, token: str | None) -> Principal:
        if token is None:
            return ANONYMOUS
        if not token or len(token) > 512:
            raise InvalidTokenError()
        presented = hash_token(token)
        principal = await self._cache.get(("principal", presented), lambda: self._load(presented))
        if principal is None:
            raise InvalidTokenError()
        return principal

    async def _load(self, presented: str) -> Principal | None:
        row = await self._index.get_token_by_hash(presented)
        # The lookup is by hash; the compare below keeps the final check constant-time as well.
        if row is None or not hmac.compare_digest(row.token_hash, presented):
            return None
        user = await self._index.get_user(row.user_id)
        return Principal(user=user, token=row) if user is not None else None
