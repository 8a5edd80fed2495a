"""Store use cases: resolve by ID or name with an access check, list, get-or-create, update, delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvbox.backends.base import UNSET, MetadataIndex, _Unset
from kvbox.core.clock import Clock
from kvbox.core.errors import (
    InvalidParameterError,
    InvalidValueError,
    NameNotUniqueError,
    StoreNotFoundError,
    TokenNotProvidedError,
)
from kvbox.core.ids import new_id, new_secret
from kvbox.core.models import GeneralAccess, Store, StorePage, User
from kvbox.core.names import validate_store_name
from kvbox.core.signatures import verify_record, verify_storage
from kvbox.service.access import StoreRef, authorize, permission_of
from kvbox.service.principal import Permission, Principal
from kvbox.service.schemas import validate_schema
from kvbox.service.stats import StatsBuffer

MAX_PAGE = 1000
OWNERSHIP_VALUES = ("ownedByMe", "sharedWithMe")


@dataclass(frozen=True, slots=True)
class Resolved:
    """A store the caller may use, with the permission they hold on it."""

    store: Store
    owner: User | None
    permission: Permission


class UserDirectory:
    """User lookups by ID, cached per process (users are never renamed)."""

    def __init__(self, index: MetadataIndex) -> None:
        self._index = index
        self._by_id: dict[str, User] = {}

    async def get(self, user_id: str) -> User | None:
        user = self._by_id.get(user_id)
        if user is None:
            user = await self._index.get_user(user_id)
            if user is not None and len(self._by_id) < 10_000:
                self._by_id[user_id] = user
        return user

    async def fresh(self, user_id: str) -> User | None:
        """Uncached: for decisions that depend on settings a user may change (default access)."""
        user = await self._index.get_user(user_id)
        if user is not None:
            self._by_id[user_id] = user
        return user


class StoreService:
    def __init__(self, index: MetadataIndex, clock: Clock, stats: StatsBuffer, users: UserDirectory) -> None:
        self._index = index
        self._clock = clock
        self._stats = stats
        self.users = users

    async def _find(self, principal: Principal, ref: StoreRef) -> Store | None:
        if ref.store_id is not None:
            return await self._index.get_store(ref.store_id)
        if ref.username is None:
            if principal.user is None:
                raise TokenNotProvidedError()
            owner_id = principal.user.id
        else:
            # `username~name`; a user ID in place of the username works too.
            owner = await self._index.get_user_by_name(ref.username) or await self._index.get_user(ref.username)
            if owner is None:
                return None
            owner_id = owner.id
        return await self._index.get_store_by_name(owner_id, ref.name or "")

    async def resolve(
        self,
        principal: Principal,
        segment: str,
        *,
        need: Permission,
        signature: str | None = None,
        record_key: str | None = None,
    ) -> Resolved:
        """Find a store and check the caller may do `need` on it (404 when it does not exist).

        `signature` is a storage-content signature or, when `record_key` is given, that
        record's signature. A valid one grants READ only.
        """
        ref = StoreRef.parse(segment)
        store = await self._find(principal, ref)
        if store is None:
            raise StoreNotFoundError()
        owner = await self.users.fresh(store.user_id) if principal.user is None or (
            principal.user.id != store.user_id
        ) else principal.user
        signed = False
        if need is Permission.READ and signature:
            signed = (record_key is not None and verify_record(store.url_signing_secret, record_key, signature)) or (
                verify_storage(store.url_signing_secret, store.id, signature, now_ms=self._clock.now_ms())
            )
        permission = authorize(principal, store, need=need, owner=owner, by_name=ref.by_name, signed=signed)
        return Resolved(store=store, owner=owner, permission=permission)

    def permission(self, principal: Principal, store: Store) -> Permission:
        return permission_of(principal, store)

    async def get(self, principal: Principal, segment: str, *, signature: str | None = None) -> Resolved:
        resolved = await self.resolve(principal, segment, need=Permission.READ, signature=signature)
        self._stats.touched(resolved.store.id, self._clock.now_ms())
        await self._stats.flush()
        store = await self._index.get_store(resolved.store.id)
        if store is None:
            raise StoreNotFoundError()
        return Resolved(store=store, owner=resolved.owner, permission=resolved.permission)

    async def list(
        self,
        principal: Principal,
        *,
        offset: int = 0,
        limit: int = MAX_PAGE,
        desc: bool = False,
        unnamed: bool = False,
        ownership: str | None = None,
    ) -> StorePage:
        user = _require_user(principal)
        if ownership is not None and ownership not in OWNERSHIP_VALUES:
            raise InvalidParameterError(
                f"Invalid value for parameter 'ownership': {ownership!r} (use ownedByMe or sharedWithMe)."
            )
        if ownership == "sharedWithMe":
            return StorePage(total=0, items=[])
        await self._stats.flush()
        return await self._index.list_stores(
            user.id, include_unnamed=unnamed, offset=offset, limit=limit, desc=desc
        )

    async def get_or_create(
        self, principal: Principal, *, name: str | None = None, schema: Any = None
    ) -> tuple[Store, bool]:
        """Return the caller's store named `name` (created=False) or a new store (created=True)."""
        user = _require_user(principal)
        if name is not None:
            validate_store_name(name)
        if schema is not None:
            schema = validate_schema(schema)
        if name is not None:
            existing = await self._index.get_store_by_name(user.id, name)
            if existing is not None:
                return existing, False
        now = self._clock.now_ms()
        store = Store(
            id=new_id(),
            name=name,
            user_id=user.id,
            created_at=now,
            modified_at=now,
            accessed_at=now,
            url_signing_secret=new_secret(),
            schema=schema,
        )
        try:
            await self._index.insert_store(store)
        except NameNotUniqueError:
            # Another request created it first: get-or-create returns that one.
            existing = await self._index.get_store_by_name(user.id, name or "")
            if existing is None:
                raise
            return existing, False
        return store, True

    async def update(
        self,
        principal: Principal,
        segment: str,
        *,
        name: str | _Unset | None = UNSET,
        general_access: str | _Unset = UNSET,
    ) -> Resolved:
        access: GeneralAccess | _Unset = UNSET
        if not isinstance(general_access, _Unset):
            try:
                access = GeneralAccess(general_access)
            except ValueError:
                raise InvalidValueError(
                    f"Invalid value provided: generalAccess must be one of "
                    f"{', '.join(a.value for a in GeneralAccess)}."
                ) from None
        if not isinstance(name, _Unset) and name is not None:
            validate_store_name(name)
        need = Permission.MANAGE if not isinstance(access, _Unset) else Permission.WRITE
        resolved = await self.resolve(principal, segment, need=need)
        updated = await self._index.update_store(
            resolved.store.id, modified_at=self._clock.now_ms(), name=name, general_access=access
        )
        if updated is None:
            raise StoreNotFoundError()
        return Resolved(store=updated, owner=resolved.owner, permission=resolved.permission)

    async def delete(self, principal: Principal, segment: str) -> None:
        resolved = await self.resolve(principal, segment, need=Permission.MANAGE)
        if not await self._index.delete_store(resolved.store.id):
            raise StoreNotFoundError()


def _require_user(principal: Principal) -> User:
    if principal.user is None:
        raise TokenNotProvidedError()
    return principal.user
