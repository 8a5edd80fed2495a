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


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    """Turns a presented API token into a Principal. Only token hashes are stored."""

    def __init__(self, index: MetadataIndex, cache: ReadCache | None = None) -> None:
        self._index = index
        self._cache = cache or ReadCache(index)

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
