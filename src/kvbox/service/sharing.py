"""Sharing stores with other users, and a user's default general access."""

from __future__ import annotations

from dataclasses import dataclass

from kvbox.backends.base import MetadataIndex
from kvbox.core.clock import Clock
from kvbox.core.errors import (
    InsufficientPermissionsError,
    InvalidValueError,
    TokenNotProvidedError,
    UserNotFoundError,
)
from kvbox.core.models import GeneralAccess, Grant, Permission, User
from kvbox.service.principal import Principal
from kvbox.service.stores import StoreService

GRANTABLE = (Permission.READ, Permission.WRITE, Permission.MANAGE)
USER_DEFAULTS = (GeneralAccess.RESTRICTED, GeneralAccess.ANYONE_WITH_ID_CAN_READ)


@dataclass(frozen=True, slots=True)
class GrantView:
    grant: Grant
    user: User


def parse_permission(value: object) -> Permission:
    if isinstance(value, str) and value.upper() in ("READ", "WRITE", "MANAGE"):
        return Permission[value.upper()]
    raise InvalidValueError("Invalid value provided: permission must be READ, WRITE or MANAGE.")


def parse_default_access(value: object) -> GeneralAccess:
    if isinstance(value, str) and value in {a.value for a in USER_DEFAULTS}:
        return GeneralAccess(value)
    raise InvalidValueError(
        "Invalid value provided: a user's default general access is RESTRICTED or ANYONE_WITH_ID_CAN_READ."
    )


class SharingService:
    def __init__(self, index: MetadataIndex, stores: StoreService, clock: Clock) -> None:
        self._index = index
        self._stores = stores
        self._clock = clock

    async def _user(self, name_or_id: str) -> User:
        user = None
        if "\x00" not in name_or_id:  # no name or ID holds NUL (and PostgreSQL cannot look one up)
            user = await self._index.get_user_by_name(name_or_id) or await self._index.get_user(name_or_id)
        if user is None:
            raise UserNotFoundError(f"User {name_or_id!r} was not found.")
        return user

    async def list(self, principal: Principal, segment: str) -> list[GrantView]:
        resolved = await self._stores.resolve(principal, segment, need=Permission.MANAGE)
        views = []
        for grant in await self._index.list_grants(resolved.store.id):
            user = await self._index.get_user(grant.user_id)
            if user is not None:
                views.append(GrantView(grant=grant, user=user))
        return views

    async def grant(self, principal: Principal, segment: str, user_ref: str, permission: object) -> GrantView:
        """Share the store with a user (by username or ID), or change their permission."""
        level = parse_permission(permission)
        resolved = await self._stores.resolve(principal, segment, need=Permission.MANAGE)
        user = await self._user(user_ref)
        if user.id == resolved.store.user_id:
            raise InvalidValueError("The owner of a store always holds every permission on it.")
        existing = await self._index.get_grant(resolved.store.id, user.id)
        grant = Grant(
            store_id=resolved.store.id,
            user_id=user.id,
            permission=level,
            created_at=existing.created_at if existing else self._clock.now_ms(),
        )
        await self._index.set_grant(grant)
        return GrantView(grant=grant, user=user)

    async def revoke(self, principal: Principal, segment: str, user_ref: str) -> bool:
        resolved = await self._stores.resolve(principal, segment, need=Permission.MANAGE)
        user = await self._user(user_ref)
        return await self._index.delete_grant(resolved.store.id, user.id)

    async def set_default_access(self, principal: Principal, value: object) -> User:
        """Change the caller's default general access; it applies to their stores at once."""
        if principal.user is None:
            raise TokenNotProvidedError()
        if principal.token is not None and (principal.token.read_only or principal.token.store_ids is not None):
            raise InsufficientPermissionsError("A scoped API token may not change account settings.")
        access = parse_default_access(value)
        await self._index.set_user_default_access(principal.user.id, access)
        user = await self._index.get_user(principal.user.id)
        if user is None:
            raise UserNotFoundError()
        return user
