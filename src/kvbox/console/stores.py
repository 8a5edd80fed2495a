"""Store pages: the list, creating a store, the store header, settings (rename, general
access, sharing) and deleting a store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from kvbox.console import present
from kvbox.console.web import Caller, Console, form_of
from kvbox.core.errors import InvalidValueError, KvboxError
from kvbox.core.models import ExpiryRule, GeneralAccess, Permission, Store
from kvbox.core.parsing import parse_int
from kvbox.service.access import token_cap
from kvbox.service.settings import parse_duration_ms
from kvbox.service.sharing import GRANTABLE
from kvbox.service.stores import Resolved

PAGE_SIZES = (20, 50, 100)
DEFAULT_PAGE_SIZE = 50
SORTS = ("created", "modified", "name", "records", "size")
MAX_PAGE_NUMBER = 1_000_000
SCAN_LIMIT = 100_000  # stores read for a search or a sort the index cannot do

ACCESS_HELP = {
    GeneralAccess.RESTRICTED: "Only you and the people you share the store with.",
    GeneralAccess.ANYONE_WITH_ID_CAN_READ: "Anyone who knows the store's ID can read it, without a token.",
    GeneralAccess.ANYONE_WITH_NAME_CAN_READ: "Anyone can read it by ID or by owner~name, without a token.",
    GeneralAccess.FOLLOW_USER_SETTING: "The owner's default for their stores, currently “{current}”.",
}


@dataclass(frozen=True, slots=True)
class Row:
    resolved: Resolved
    expires_in: str | None

    @property
    def store(self) -> Store:
        return self.resolved.store


def _int(value: str | None, default: int, *, lo: int, hi: int) -> int:
    """A number from the query string, kept within `lo..hi`; anything unreadable is `default`."""
    try:
        return min(max(parse_int(value), lo), hi) if value else default
    except ValueError:
        return default


def page_number(value: str | None) -> int:
    """A page number from the query string (`?page=`); 1 when missing or unreadable."""
    return _int(value, 1, lo=1, hi=MAX_PAGE_NUMBER)


def _sort_key(sort: str) -> Any:
    if sort == "records":
        return lambda r: (r.store.record_count, r.store.created_at)
    if sort == "size":
        return lambda r: (r.store.stats.storage_bytes, r.store.created_at)
    if sort == "modified":
        return lambda r: (r.store.modified_at, r.store.created_at)
    return lambda r: (r.store.created_at, r.store.id)


async def _scan(console: Console, caller: Caller, *, unnamed: bool, search: str | None) -> list[Resolved]:
    """Every store the caller may see (up to `SCAN_LIMIT`) that `search` finds, for the sorts
    no index serves (by records, size, modification), in one call: paging by offset would
    sort the owner's stores once per page."""
    page = await console.services.stores.list(
        caller.principal, offset=0, limit=SCAN_LIMIT, unnamed=unnamed, search=search
    )
    return page.items


async def store_list(console: Console, request: Request, caller: Caller) -> Response:
    qp = request.query_params
    unnamed = qp.get("unnamed") == "1"
    search = (qp.get("q") or "").strip()
    sort = qp.get("sort") or "created"
    sort = sort if sort in SORTS else "created"
    desc = qp.get("dir", "desc") != "asc"
    per_page = _int(qp.get("per_page"), DEFAULT_PAGE_SIZE, lo=1, hi=max(PAGE_SIZES))
    page = page_number(qp.get("page"))
    offset = (page - 1) * per_page
    if sort in ("created", "name"):
        # The index pages by creation time or by name, searched or not: one query for any page.
        result = await console.services.stores.list(
            caller.principal, offset=offset, limit=per_page, desc=desc, unnamed=unnamed, by_name=sort == "name",
            search=search or None,
        )  # fmt: skip
        total, items = result.total, result.items
    else:
        everything = await _scan(console, caller, unnamed=unnamed, search=search or None)
        everything.sort(key=_sort_key(sort), reverse=desc)
        total, items = len(everything), everything[offset : offset + per_page]
    now = console.now_ms()
    retention = console.services.retention
    rows = [Row(r, present.deleted_in(retention.expires_at(r.store), now)) for r in items]
    pages = max(1, -(-total // per_page))
    state = {"q": search or None, "unnamed": "1" if unnamed else None, "sort": sort, "dir": "desc" if desc else "asc",
             "per_page": per_page if per_page != DEFAULT_PAGE_SIZE else None}  # fmt: skip

    def link(**changes: str | int | None) -> str:
        return present.with_query("/stores", **{**state, **changes})

    return console.render(
        request, "stores.html", caller, link=link, rows=rows, total=total, page=page, pages=pages, per_page=per_page,
        offset=offset, search=search, unnamed=unnamed, sort=sort, desc=desc, state=state, page_sizes=PAGE_SIZES,
        can_create=token_cap(caller.principal, None) >= Permission.MANAGE,
    )  # fmt: skip


async def create_store(console: Console, request: Request, caller: Caller) -> Response:
    name = form_of(request).get("name", "").strip() or None
    try:
        resolved, created = await console.services.stores.get_or_create(caller.principal, name=name)
    except KvboxError as exc:
        return console.redirect("/stores", flash=("error", exc.message))
    if not created:
        return console.redirect(
            present.store_url(resolved.store.id),
            flash=("info", f"You already have a store named {name!r}; here it is."),
        )
    label = f"Store {name!r}" if name else "An unnamed store"
    return console.redirect(present.store_url(resolved.store.id), flash=("ok", f"{label} was created."))


async def load_store(console: Console, caller: Caller, segment: str) -> Resolved:
    """The store for a page header, checked exactly as `GET /v2/key-value-stores/{store}`."""
    return await console.services.stores.get(caller.principal, segment)


def store_context(console: Console, resolved: Resolved, tab: str) -> dict[str, Any]:
    store = resolved.store
    now = console.now_ms()
    expires = console.services.retention.expires_at(store)
    owner = resolved.owner.username if resolved.owner else store.user_id
    return {
        "store": store,
        "resolved": resolved,
        "owner": owner,
        "permission": resolved.permission,
        "title": store.name or "Unnamed store",
        "path": f"{owner}/{store.name}" if store.name else f"#{store.id}",
        "expires_in": present.deleted_in(expires, now),
        "expires_at": expires,
        "tab": tab,
    }


async def settings_page(console: Console, request: Request, caller: Caller) -> Response:
    resolved = await load_store(console, caller, request.path_params["store"])
    grants = []
    if resolved.permission >= Permission.MANAGE:
        grants = await console.services.sharing.list(caller.principal, resolved.store.id)
    owner_default = resolved.owner.default_general_access if resolved.owner else GeneralAccess.RESTRICTED
    current = present.ACCESS_LABELS[owner_default]
    access_help = {a.value: text.format(current=current) for a, text in ACCESS_HELP.items()}
    return console.render(
        request, "store_settings.html", caller, **store_context(console, resolved, "settings"), grants=grants,
        access_choices=[a.value for a in GeneralAccess], access_help=access_help,
        permissions=[p.name for p in GRANTABLE],
        expiry_rules=sorted(resolved.store.record_expiry.rules, key=lambda r: r.prefix),
    )  # fmt: skip


async def rename_store(console: Console, request: Request, caller: Caller) -> Response:
    segment = request.path_params["store"]
    name = form_of(request).get("name", "").strip() or None
    back = present.store_url(segment, "settings")
    try:
        resolved = await console.services.stores.update(caller.principal, segment, name=name)
    except KvboxError as exc:
        return console.redirect(back, flash=("error", exc.message))
    if resolved.store.name is None:
        days = present.duration(console.services.retention.retention_ms)
        text = f"The store is now unnamed: it will be deleted {days} after its last use."
    else:
        text = f"The store is now named {resolved.store.name!r} and will be kept."
    return console.redirect(back, flash=("ok", text))


async def set_access(console: Console, request: Request, caller: Caller) -> Response:
    segment = request.path_params["store"]
    back = present.store_url(segment, "settings")
    try:
        await console.services.stores.update(
            caller.principal, segment, general_access=form_of(request).get("general_access", "")
        )
    except KvboxError as exc:
        return console.redirect(back, flash=("error", exc.message))
    return console.redirect(back, flash=("ok", "General access saved."))


async def set_expiry(console: Console, request: Request, caller: Caller) -> Response:
    """Add (or change) the expiry rule of a prefix, or remove one: the same service call as the
    API's PUT of `recordExpiry` with the rules edited."""
    segment = request.path_params["store"]
    form = form_of(request)
    prefix = form.get("prefix", "").strip()
    back = present.store_url(segment, "settings") + "#expiry"
    try:
        resolved = await load_store(console, caller, segment)
        rules = {r.prefix: r for r in resolved.store.record_expiry.rules}
        if form.get("action") == "remove":
            rules.pop(prefix, None)
            text = (
                f"Records under {prefix!r} no longer expire by a rule." if prefix else "The rule for every key is gone."
            )
        else:
            seconds = _rule_seconds(form.get("after", ""))
            rules[prefix] = ExpiryRule(prefix, seconds)
            which = f"Records whose key starts with {prefix!r}" if prefix else "Records"
            text = f"{which} now expire {present.duration(seconds * 1000)} after their last write."
        await console.services.stores.update(caller.principal, segment, record_expiry=tuple(rules.values()))
    except KvboxError as exc:
        return console.redirect(back, flash=("error", exc.message))
    return console.redirect(back, flash=("ok", text))


def _rule_seconds(text: str) -> int:
    try:
        ms = parse_duration_ms(text.strip())
    except ValueError:
        ms = 0
    if ms < 1000 or ms % 1000:
        raise InvalidValueError(f"Invalid value provided: {text!r} is not a duration such as 1d, 12h, 30m or 90s.")
    return ms // 1000


async def share(console: Console, request: Request, caller: Caller) -> Response:
    segment = request.path_params["store"]
    form = form_of(request)
    username = form.get("username", "").strip()
    back = present.store_url(segment, "settings")
    try:
        view = await console.services.sharing.grant(caller.principal, segment, username, form.get("permission"))
    except KvboxError as exc:
        return console.redirect(back, flash=("error", exc.message))
    text = f"{view.user.username} now has {view.grant.permission.name} access."
    return console.redirect(back, flash=("ok", text))


async def unshare(console: Console, request: Request, caller: Caller) -> Response:
    segment = request.path_params["store"]
    username = request.path_params["user"]
    back = present.store_url(segment, "settings")
    try:
        removed = await console.services.sharing.revoke(caller.principal, segment, username)
    except KvboxError as exc:
        return console.redirect(back, flash=("error", exc.message))
    text = f"The store is no longer shared with {username}." if removed else f"It was not shared with {username}."
    return console.redirect(back, flash=("ok", text))


async def delete_store(console: Console, request: Request, caller: Caller) -> Response:
    """Delete only when the form repeats the store's name (its ID for an unnamed store)."""
    segment = request.path_params["store"]
    resolved = await load_store(console, caller, segment)
    store = resolved.store
    expected = store.name or store.id
    if form_of(request).get("confirm", "").strip() != expected:
        return console.redirect(
            present.store_url(store.id, "settings") + "#delete",
            flash=("error", f"Type {expected!r} to confirm that this store should be deleted."),
        )
    await console.services.stores.delete(caller.principal, store.id)
    label = f"Store {store.name!r}" if store.name else f"Unnamed store {store.id}"
    return console.redirect("/stores", flash=("ok", f"{label} and all its records were deleted."))
