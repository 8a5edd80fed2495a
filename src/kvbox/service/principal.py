"""Who is calling: a user (through one of their tokens) or nobody."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from kvbox.backends.base import MetadataIndex
from kvbox.core.errors import InvalidTokenError
from kvbox.core.models import Token, User


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

    def __init__(self, index: MetadataIndex) -> None:
        self._index = index

    async def authenticate(self, token: str | None) -> Principal:
        if token is None:
            return ANONYMOUS
        if not token or len(token) > 512:
            raise InvalidTokenError()
        presented = hash_token(token)
        row = await self._index.get_token_by_hash(presented)
        # The lookup is by hash; the compare below keeps the final check constant-time as well.
        if row is None or not hmac.compare_digest(row.token_hash, presented):
            raise InvalidTokenError()
        user = await self._index.get_user(row.user_id)
        if user is None:
            raise InvalidTokenError()
        return Principal(user=user, token=row)
