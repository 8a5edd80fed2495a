"""The change feed endpoint: `GET .../changes` as JSON (with long-poll) or as Server-Sent
Events (`Accept: text/event-stream`, resumed with `Last-Event-ID`)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from kvbox.api.http import CORS_HEADERS, Receive, Request, Send, json_bytes, send_json
from kvbox.core.clock import iso_ms
from kvbox.core.errors import InvalidParameterError
from kvbox.core.feed import MAX_CHANGES_PAGE, MAX_WAIT_S, Change
from kvbox.core.models import Store
from kvbox.core.parsing import parse_int
from kvbox.service.container import Services
from kvbox.service.principal import Principal

SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass events on at once
]
KEEPALIVE = b": keepalive\n\n"


def change_view(change: Change) -> dict[str, Any]:
    """A change as the API shows it; `etag` as the record's ETag header (quotes included)."""
    return {
        "sequence": change.sequence,
        "eventType": change.event_type,
        "key": change.key,
        "etag": f'"{change.etag}"' if change.etag is not None else None,
        "size": change.size,
        "contentType": change.content_type,
        "createdAt": iso_ms(change.created_at),
    }


def _cursor(req: Request) -> int:
    """`after`, or the `Last-Event-ID` of a reconnecting event stream (which wins)."""
    last_event = req.header("last-event-id")
    if last_event is not None and last_event.strip():
        try:
            return parse_int(last_event.strip(), minimum=0)
        except ValueError as err:
            raise InvalidParameterError(f"Header 'Last-Event-ID' {err}.") from None
    return req.int_param("after", 0)


async def get_changes(req: Request, send: Send, svc: Services, who: Principal, segment: str) -> None:
    after = _cursor(req)
    limit = req.int_param("limit", MAX_CHANGES_PAGE, minimum=1, maximum=MAX_CHANGES_PAGE)
    signature = req.query.get("signature") or None
    if "text/event-stream" in (req.header("accept") or ""):
        resolved = await svc.changes.resolve(who, segment, signature=signature)
        await _stream(req, send, svc, resolved.store, after)
        return
    wait = req.int_param("wait", 0, maximum=MAX_WAIT_S)
    items, last = await svc.changes.changes(who, segment, after=after, limit=limit, wait_s=wait, signature=signature)
    await send_json(send, 200, {"data": {"items": [change_view(c) for c in items], "lastSequence": last}})


def _events(items: list[Change]) -> bytes:
    return b"".join(
        b"id: %d\nevent: %s\ndata: %s\n\n" % (c.sequence, c.event_type.encode(), json_bytes(change_view(c)))
        for c in items
    )


async def _stream(req: Request, send: Send, svc: Services, store: Store, after: int) -> None:
    """Stream the store's changes after `after` until the client goes away (or the stream's
    time is up: the client reconnects with Last-Event-ID)."""
    # A cursor that fell off the log is answered 410 before the stream starts.
    first, after = await svc.changes.read(store, after=after, limit=MAX_CHANGES_PAGE)
    await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *CORS_HEADERS]})
    await send({"type": "http.response.body", "body": _events(first) or KEEPALIVE, "more_body": True})

    async def pump() -> None:
        async for batch in svc.changes.follow(store, after=after):
            await send({"type": "http.response.body", "body": _events(batch) or KEEPALIVE, "more_body": True})

    pumping = asyncio.ensure_future(pump())
    gone = asyncio.ensure_future(_disconnected(req.receive))
    try:
        await asyncio.wait({pumping, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, gone):
            task.cancel()
        for task in (pumping, gone):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if not gone.done() or gone.cancelled():
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b""})


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
