"""Access decisions for one store: ownership, general access and signed URLs."""

from __future__ import annotations

from dataclasses import dataclass

from kvbox.core.errors import InsufficientPermissionsError, TokenNotProvidedError
from kvbox.core.models import GeneralAccess, Grant, Permission, Store, User
from kvbox.service.principal import Principal


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


def permission_of(principal: Principal, store: Store, grant: Grant | None = None) -> Permission:
    """The caller's own rights on the store (ownership or a grant), capped by the token's scope.

    General access and signatures come on top of this, in `authorize`.
    """
    if principal.user is None:
        return Permission.NONE
    if principal.user.id == store.user_id:
        have = Permission.MANAGE
    elif grant is not None and grant.user_id == principal.user.id and grant.store_id == store.id:
        have = grant.permission
    else:
        return Permission.NONE
    return min(have, token_cap(principal, store.id))


def token_cap(principal: Principal, store_id: str | None) -> Permission:
    """The most a token lets its user do on a store (`store_id=None`: on a store not yet created)."""
    token = principal.token
    if token is None:
        return Permission.MANAGE
    if token.store_ids is not None and (store_id is None or store_id not in token.store_ids):
        return Permission.NONE
    return Permission.READ if token.read_only else Permission.MANAGE


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
    grant: Grant | None = None,
) -> Permission:
    """Return the caller's permission if it covers `need`, else raise 401/403.

    A valid signature or a public general access grants READ only, never more.
    """
    have = permission_of(principal, store, grant)
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
