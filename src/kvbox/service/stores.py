"""Store use cases: resolve by ID or name with an access check, list, get-or-create, update, delete."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvbox.backends.base import MetadataIndex
from kvbox.core.clock import Clock
from kvbox.core.errors import (
    InsufficientPermissionsError,
    InvalidParameterError,
    InvalidValueError,
    NameNotUniqueError,
    StoreNotFoundError,
    TokenNotProvidedError,
)
from kvbox.core.expiry import replace_rules
from kvbox.core.ids import new_id, new_secret
from kvbox.core.models import ExpiryRule, GeneralAccess, Grant, Permission, Store, Token, User, WriteBasis
from kvbox.core.names import validate_store_name
from kvbox.core.sentinels import UNSET, Unset
from kvbox.core.signatures import verify_record, verify_storage
from kvbox.service.access import StoreRef, authorize, permission_of, token_cap
from kvbox.service.principal import Principal
from kvbox.service.ratelimit import RateLimiter
from kvbox.service.readcache import ReadCache
from kvbox.service.schemas import validate_schema
from kvbox.service.stats import StatsBuffer

MAX_PAGE = 1000
MAX_WRITABLE = 10_000
MAX_TITLE_LENGTH = 1000
OWNERSHIP_VALUES = ("ownedByMe", "sharedWithMe")


@dataclass(frozen=True, slots=True)
class Resolved:
    """A store the caller may use, with the permission they hold on it."""

    store: Store
    owner: User | None
    permission: Permission
    by_signature: bool = False  # READ came from a valid signature rather than the caller's rights
    grant: Grant | None = None  # the caller's grant on the store, as the decision saw it


@dataclass(frozen=True, slots=True)
class ResolvedPage:
    total: int
    items: list[Resolved]


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
    def __init__(
        self,
        index: MetadataIndex,
        clock: Clock,
        stats: StatsBuffer,
        users: UserDirectory,
        limiter: RateLimiter | None = None,
        cache: ReadCache | None = None,
    ) -> None:
        self._limiter = limiter
        self._cache = cache or ReadCache(index)
        self._index = index
        self._clock = clock
        self._stats = stats
        self.users = users
        # Record-write decisions by (store segment, token hash): see `writable`.
        self._writable: dict[tuple[str, str | None], tuple[Resolved, Token | None, str | None]] = {}

    async def _find(self, principal: Principal, ref: StoreRef) -> Store | None:
        if ref.store_id is not None:
            store_id = ref.store_id
            return await self._cache.get(("store", store_id), lambda: self._index.get_store(store_id))
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
        record_op: bool = False,
    ) -> Resolved:
        """Find a store and check the caller may do `need` on it (404 when it does not exist).

        `signature` is a storage-content signature or, when `record_key` is given, that
        record's signature. A valid one grants READ only.
        """
        ref = parse_ref(segment)
        store = await self._find(principal, ref)
        if store is None:
            raise StoreNotFoundError()
        if principal.user is not None and principal.user.id == store.user_id:
            owner: User | None = principal.user
            grant = None
        else:
            owner = await self._cache.get(("user", store.user_id), lambda: self._index.get_user(store.user_id))
            grant = None
            if principal.user is not None:
                user_id = principal.user.id
                grant = await self._cache.get(
                    ("grant", store.id, user_id), lambda: self._index.get_grant(store.id, user_id)
                )
        return self.decide(
            principal, ref, store, owner, grant, need=need, signature=signature, record_key=record_key,
            record_op=record_op,
        )  # fmt: skip

    def decide(
        self,
        principal: Principal,
        ref: StoreRef,
        store: Store | None,
        owner: User | None,
        grant: Grant | None,
        *,
        need: Permission,
        signature: str | None = None,
        record_key: str | None = None,
        record_op: bool = False,
    ) -> Resolved:
        """`resolve`'s decision on rows already read: the store `ref` named (None: not found), its
        owner and the caller's grant on it."""
        if store is None:
            raise StoreNotFoundError()
        signed = False
        if need is Permission.READ and signature:
            signed = (record_key is not None and verify_record(store.url_signing_secret, record_key, signature)) or (
                verify_storage(store.url_signing_secret, store.id, signature, now_ms=self._clock.now_ms())
            )
        permission = authorize(
            principal, store, need=need, owner=owner, by_name=ref.by_name, signed=signed, grant=grant
        )
        by_signature = signed and permission_of(principal, store, grant) < Permission.READ
        if self._limiter is not None:
            # Keyed by the store's ID however it was addressed, and only for allowed requests.
            self._limiter.check_store(store.id, record_op=record_op)
        return Resolved(store=store, owner=owner, permission=permission, by_signature=by_signature, grant=grant)

    async def writable(self, principal: Principal, segment: str, *, fresh: bool = False) -> tuple[Resolved, WriteBasis]:
        """A record write's decision (WRITE on the store) and the rows it was made on, for
        `put_record_as` to confirm. Decisions come from a process-local map unless `fresh`:
        a store's ID and owner never change and the basis covers everything else, the
        store's name included when the request named the store by name (renamed, or the
        name given to another store, the write is refused and decided again)."""
        memo = (segment, principal.token.token_hash if principal.token is not None else None)
        kept = None if fresh else self._writable.get(memo)
        if kept is None:
            resolved = await self.resolve(principal, segment, need=Permission.WRITE, record_op=True)
            # The token the decision is made on goes into the basis with it.
            kept = (resolved, principal.token, resolved.store.name if parse_ref(segment).by_name else None)
            if len(self._writable) >= MAX_WRITABLE:
                self._writable.clear()
            self._writable[memo] = kept
        elif self._limiter is not None:
            self._limiter.check_store(kept[0].store.id, record_op=True)
        resolved, token, name = kept
        return resolved, WriteBasis(memo[1], token, resolved.grant, name, resolved.store.record_expiry)

    def forget_writable(self, principal: Principal, segment: str) -> None:
        """Drop the decision `writable` keeps for the caller and `segment` (its rows changed)."""
        self._writable.pop((segment, principal.token.token_hash if principal.token is not None else None), None)

    async def _with_permission(self, principal: Principal, store: Store) -> Resolved:
        owner = await self.users.get(store.user_id)
        grant = None
        if principal.user is not None and principal.user.id != store.user_id:
            grant = await self._index.get_grant(store.id, principal.user.id)
        return Resolved(store=store, owner=owner, permission=permission_of(principal, store, grant))

    async def get(self, principal: Principal, segment: str, *, signature: str | None = None) -> Resolved:
        resolved = await self.resolve(principal, segment, need=Permission.READ, signature=signature)
        self._stats.touched(resolved.store.id, self._clock.now_ms())
        await self._stats.try_flush()
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
        by_name: bool = False,
        search: str | None = None,
    ) -> ResolvedPage:
        """The stores the caller may see: owned, shared with them, or both (`ownership=None`);
        `by_name` and `search` as `MetadataIndex.list_stores` takes them."""
        user = _require_user(principal)
        if ownership is not None and ownership not in OWNERSHIP_VALUES:
            raise InvalidParameterError(
                f"Invalid value for parameter 'ownership': {ownership!r} (use ownedByMe or sharedWithMe)."
            )
        if search is not None and "\x00" in search:
            return ResolvedPage(total=0, items=[])  # no name or ID holds NUL (and PostgreSQL cannot compare one)
        owned = ownership in (None, "ownedByMe")
        shared = ownership in (None, "sharedWithMe")
        await self._stats.try_flush()
        token = principal.token
        if token is not None and token.store_ids is not None:
            # A store-scoped token sees only its stores: few, so filter and page them here.
            found: list[Resolved] = []
            for store_id in token.store_ids:
                store = await self._index.get_store(store_id)
                if store is None or (store.name is None and not unnamed) or not _matches(store, search):
                    continue
                r = await self._with_permission(principal, store)
                is_owner = store.user_id == user.id
                if r.permission >= Permission.READ and ((owned and is_owner) or (shared and not is_owner)):
                    found.append(r)
            if by_name:
                found.sort(key=lambda r: (r.store.name is None, (r.store.name or "").lower(), r.store.created_at),
                           reverse=desc)  # fmt: skip
            else:
                found.sort(key=lambda r: (r.store.created_at, r.store.id), reverse=desc)
            return ResolvedPage(total=len(found), items=found[offset : offset + limit])
        page = await self._index.list_stores(
            user.id, include_unnamed=unnamed, offset=offset, limit=limit, desc=desc, owned=owned, shared=shared,
            by_name=by_name, search=search,
        )  # fmt: skip
        return ResolvedPage(total=page.total, items=[await self._with_permission(principal, s) for s in page.items])

    async def get_or_create(
        self, principal: Principal, *, name: str | None = None, schema: Any = None
    ) -> tuple[Resolved, bool]:
        """Return the caller's store named `name` (created=False) or a new store (created=True).

        Read-only and store-scoped tokens may open an existing store they can see but never
        create one.
        """
        user = _require_user(principal)
        if name is not None:
            validate_store_name(name)
        if schema is not None:
            schema = validate_schema(schema)
        if name is not None:
            existing = await self._index.get_store_by_name(user.id, name)
            if existing is not None:
                return await self._visible(principal, existing), False
        if token_cap(principal, None) < Permission.MANAGE:
            raise InsufficientPermissionsError("This API token may not create key-value stores.")
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
            return await self._visible(principal, existing), False
        return Resolved(store=store, owner=user, permission=Permission.MANAGE), True

    async def _visible(self, principal: Principal, store: Store) -> Resolved:
        resolved = await self._with_permission(principal, store)
        if resolved.permission < Permission.READ:
            raise InsufficientPermissionsError()
        return resolved

    async def update(
        self,
        principal: Principal,
        segment: str,
        *,
        name: str | Unset | None = UNSET,
        general_access: str | Unset = UNSET,
        title: str | Unset | None = UNSET,
        record_expiry: tuple[ExpiryRule, ...] | Unset = UNSET,
    ) -> Resolved:
        """Rename (WRITE; `None` makes the store unnamed and starts its retention clock), retitle
        (WRITE), change general access (MANAGE) or replace the record expiry rules (MANAGE; they
        apply at once, to records written before too)."""
        access: GeneralAccess | Unset = UNSET
        if not isinstance(general_access, Unset):
            try:
                access = GeneralAccess(general_access)
            except ValueError:
                raise InvalidValueError(
                    f"Invalid value provided: generalAccess must be one of {', '.join(a.value for a in GeneralAccess)}."
                ) from None
        if not isinstance(name, Unset) and name is not None:
            validate_store_name(name)
        if isinstance(title, str) and len(title) > MAX_TITLE_LENGTH:
            raise InvalidValueError(f"Invalid value provided: title is longer than {MAX_TITLE_LENGTH} characters.")
        manage = not isinstance(access, Unset) or not isinstance(record_expiry, Unset)
        resolved = await self.resolve(principal, segment, need=Permission.MANAGE if manage else Permission.WRITE)
        now = self._clock.now_ms()
        if not isinstance(record_expiry, Unset):
            rules = record_expiry
            replace_rules(resolved.store.record_expiry, rules, now)  # refused before anything changes
        updated: Store | None = resolved.store
        fields = not all(isinstance(v, Unset) for v in (name, access, title))
        if fields or isinstance(record_expiry, Unset):
            updated = await self._index.update_store(
                resolved.store.id, modified_at=now, name=name, general_access=access, title=title
            )
        if updated is not None and not isinstance(record_expiry, Unset):
            updated = await self._index.update_record_expiry(
                resolved.store.id, lambda current: replace_rules(current, rules, now), modified_at=now
            )
        if updated is None:
            raise StoreNotFoundError()
        return Resolved(store=updated, owner=resolved.owner, permission=resolved.permission)

    async def delete(self, principal: Principal, segment: str) -> None:
        resolved = await self.resolve(principal, segment, need=Permission.MANAGE)
        if not await self._index.delete_store(resolved.store.id):
            raise StoreNotFoundError()


def _matches(store: Store, search: str | None) -> bool:
    """`MetadataIndex.list_stores`'s search, for the few stores a scoped token lists."""
    return search is None or store.id == search or (store.name or "").lower().startswith(search.lower())


def parse_ref(segment: str) -> StoreRef:
    """How a path segment names a store; a segment holding NUL names none (404)."""
    if "\x00" in segment:  # no ID or name holds NUL (and PostgreSQL cannot look one up)
        raise StoreNotFoundError()
    return StoreRef.parse(segment)


def _require_user(principal: Principal) -> User:
    if principal.user is None:
        raise TokenNotProvidedError()
    return principal.user
