"""The store's Events tab: a live feed of its changes, its webhooks (add, delete) and their
recent deliveries."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from kvbox.console import present
from kvbox.console.stores import load_store, store_context
from kvbox.console.web import Caller, Console, form_of
from kvbox.core.clock import iso_ms
from kvbox.core.errors import KvboxError
from kvbox.core.feed import EVENT_TYPES, Change
from kvbox.core.models import Permission
from kvbox.core.parsing import parse_int

RECENT = 50
DELIVERIES_SHOWN = 10
POLL_WAIT_S = 25


def change_row(change: Change) -> dict[str, Any]:
    return {"sequence": change.sequence, "eventType": change.event_type, "key": change.key, "size": change.size,
            "contentType": change.content_type, "createdAt": iso_ms(change.created_at)}  # fmt: skip


async def events_tab(console: Console, request: Request, caller: Caller) -> Response:
    resolved = await load_store(console, caller, request.path_params["store"])
    svc = console.services
    changes: list[Change] = []
    latest = 0
    if svc.changes.enabled:
        changes, latest = await svc.changes.recent(resolved.store, count=RECENT)
    hooks: list[Any] = []
    if svc.changes.enabled and resolved.permission >= Permission.MANAGE:
        for hook in await svc.webhooks.list_all(caller.principal, resolved.store.id):
            attempts = await svc.webhooks.deliveries(caller.principal, resolved.store.id, hook.id)
            hooks.append((hook, attempts[:DELIVERIES_SHOWN]))
    return console.render(
        request, "store_events.html", caller, **store_context(console, resolved, "events"),
        feed_on=svc.changes.enabled, changes=[change_row(c) for c in changes], latest=latest, hooks=hooks,
        event_types=EVENT_TYPES,
    )  # fmt: skip


async def events_feed(console: Console, request: Request, caller: Caller) -> Response:
    """The changes after `after` as JSON, waiting up to POLL_WAIT_S for one (the live feed)."""
    try:
        after = parse_int(request.query_params.get("after", "0"), minimum=0)
    except ValueError:
        return JSONResponse({"items": [], "lastSequence": 0}, status_code=400)
    svc = console.services
    items, last = await svc.changes.changes(caller.principal, request.path_params["store"], after=after,
                                            limit=RECENT, wait_s=POLL_WAIT_S)  # fmt: skip
    return JSONResponse({"items": [change_row(c) for c in items], "lastSequence": last})


async def add_webhook(console: Console, request: Request, caller: Caller) -> Response:
    segment = request.path_params["store"]
    form = form_of(request)
    back = present.store_url(segment, "events")
    events = [e for e in EVENT_TYPES if form.get(f"event-{e}")]
    body = {"requestUrl": form.get("url", "").strip(), "eventTypes": events or None,
            "keyPrefix": form.get("prefix") or None}  # fmt: skip
    try:
        _, secret = await console.services.webhooks.create(caller.principal, segment, body)
    except KvboxError as exc:
        return console.redirect(back, flash=("error", exc.message))
    text = f"Webhook added. Its signing secret (shown once): {secret}" if secret else "Webhook added."
    return console.redirect(back, flash=("ok", text))


async def delete_webhook(console: Console, request: Request, caller: Caller) -> Response:
    segment = request.path_params["store"]
    back = present.store_url(segment, "events")
    try:
        await console.services.webhooks.delete(caller.principal, segment, request.path_params["webhook"])
    except KvboxError as exc:
        return console.redirect(back, flash=("error", exc.message))
    return console.redirect(back, flash=("ok", "Webhook deleted."))
