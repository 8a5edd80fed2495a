"""Access decisions for one store: ownership, general access and signed URLs."""

from __future__ import annotations

from dataclasses import dataclass

from kvbox.core.errors import InsufficientPermissionsError, TokenNotProvidedError
from kvbox.core.models import GeneralAccess, Store, User
from kvbox.service.principal import Permission, Principal


@dataclass(frozen=True, slots=True)
class StoreRef:
    """How the caller named a store: by ID, `~name` (their own) or `username~name`."""

    store_id: str | None = None
    username: str | None = None
    name: str | None = None

    @property
    def by_name(self) -> bool:
        return self.name is not None

    @classmethod
    def parse(cls, segment: str) -> StoreRef:
        if "~" in segment:
            username, _, name = segment.partition("~")
            return cls(username=username or None, name=name)
        return cls(store_id=segment)


def permission_of(principal: Principal, store: Store) -> Permission:
    """The caller's own rights on the store, before general access and signatures."""
    if principal.user is not None and principal.user.id == store.user_id:
        return Permission.MANAGE
    return Permission.NONE


def effective_access(store: Store, owner: User | None) -> GeneralAccess:
    if store.general_access is GeneralAccess.FOLLOW_USER_SETTING:
        return owner.default_general_access if owner else GeneralAccess.RESTRICTED
    return store.general_access


def authorize(
    principal: Principal,
    store: Store,
    *,
    need: Permission,
    owner: User | None,
    by_name: bool,
    signed: bool = False,
) -> Permission:
    """Return the caller's permission if it covers `need`, else raise 401/403.

    A valid signature or a public general access grants READ only, never more.
    """
    have = permission_of(principal, store)
    if have >= need:
        return have
    if need is Permission.READ:
        if signed:
            return Permission.READ
        access = effective_access(store, owner)
        if access is GeneralAccess.ANYONE_WITH_NAME_CAN_READ:
            return Permission.READ
        if access is GeneralAccess.ANYONE_WITH_ID_CAN_READ and not by_name:
            return Permission.READ
    if principal.is_anonymous and need > Permission.READ:
        raise TokenNotProvidedError()
    raise InsufficientPermissionsError()
