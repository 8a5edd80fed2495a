"""User and token administration (used by the CLI and at first start)."""

from __future__ import annotations

from dataclasses import dataclass

from kvbox.backends.base import MetadataIndex
from kvbox.core.clock import Clock
from kvbox.core.errors import InvalidValueError, NameNotUniqueError, UserNotFoundError
from kvbox.core.ids import new_id, new_token
from kvbox.core.models import GeneralAccess, Token, User
from kvbox.core.names import validate_username
from kvbox.service.principal import hash_token

MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A token as issued: the secret is shown once and never stored."""

    user: User
    token: Token
    secret: str


class UserService:
    def __init__(self, index: MetadataIndex, clock: Clock) -> None:
        self._index = index
        self._clock = clock

    async def create_user(self, username: str, *, token: str | None = None) -> IssuedToken:
        validate_username(username)
        if await self._index.get_user_by_name(username) is not None:
            raise NameNotUniqueError(f"User {username!r} already exists.")
        if token is not None:
            await self._check_secret(token)  # before inserting: a refused token must leave no user behind
        user = User(id=new_id(), username=username, created_at=self._clock.now_ms())
        await self._index.insert_user(user)
        return await self._issue(user, token, name="default")

    async def find_user(self, name_or_id: str) -> User:
        user = None
        if "\x00" not in name_or_id:  # no name or ID holds NUL (and PostgreSQL cannot look one up)
            user = await self._index.get_user_by_name(name_or_id) or await self._index.get_user(name_or_id)
        if user is None:
            raise UserNotFoundError(f"User {name_or_id!r} was not found.")
        return user

    async def list_users(self) -> list[User]:
        return await self._index.list_users()

    async def create_token(
        self,
        username: str,
        *,
        name: str = "default",
        token: str | None = None,
        read_only: bool = False,
        store_ids: tuple[str, ...] | None = None,
    ) -> IssuedToken:
        """Issue a token; `read_only` and `store_ids` scope it (it never exceeds its user)."""
        return await self._issue(
            await self.find_user(username), token, name=name, read_only=read_only, store_ids=store_ids
        )

    async def list_tokens(self, username: str) -> list[Token]:
        return await self._index.list_tokens((await self.find_user(username)).id)

    async def revoke_token(self, token_id_or_secret: str) -> bool:
        """Revoke by token ID or by the token itself."""
        if await self._index.delete_token(token_id_or_secret):
            return True
        row = await self._index.get_token_by_hash(hash_token(token_id_or_secret))
        return row is not None and await self._index.delete_token(row.id)

    async def set_default_access(self, username: str, access: GeneralAccess) -> User:
        user = await self.find_user(username)
        if access not in (GeneralAccess.RESTRICTED, GeneralAccess.ANYONE_WITH_ID_CAN_READ):
            raise InvalidValueError("A user's default general access is RESTRICTED or ANYONE_WITH_ID_CAN_READ.")
        await self._index.set_user_default_access(user.id, access)
        return await self.find_user(user.id)

    async def _check_secret(self, secret: str) -> None:
        if len(secret) < MIN_TOKEN_LENGTH:
            raise InvalidValueError(f"A token must be at least {MIN_TOKEN_LENGTH} characters long.")
        if await self._index.get_token_by_hash(hash_token(secret)) is not None:
            raise NameNotUniqueError("This token is already in use.")

    async def _issue(
        self,
        user: User,
        secret: str | None,
        *,
        name: str,
        read_only: bool = False,
        store_ids: tuple[str, ...] | None = None,
    ) -> IssuedToken:
        if secret is None:
            secret = new_token()
        await self._check_secret(secret)
        token = Token(
            id=new_id(),
            user_id=user.id,
            token_hash=hash_token(secret),
            name=name,
            created_at=self._clock.now_ms(),
            read_only=read_only,
            store_ids=tuple(store_ids) if store_ids is not None else None,
        )
        await self._index.insert_token(token)
        return IssuedToken(user=user, token=token, secret=secret)
