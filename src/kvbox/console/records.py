"""The records tab and one record: list with cursor pages, preview, raw bytes (sandboxed, in
ranges for the audio and video players), upload, delete and the ZIP of everything."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from kvbox.console import present
from kvbox.console.stores import load_store, page_number, store_context
from kvbox.console.web import Caller, Console, form_of, log
from kvbox.core.clock import http_date
from kvbox.core.encoding import IDENTITY
from kvbox.core.errors import InvalidRequestError, KvboxError, RangeNotSatisfiableError
from kvbox.core.expiry import expires_at
from kvbox.core.keys import validate_key
from kvbox.core.models import Permission, Store
from kvbox.core.parsing import load_json
from kvbox.core.signatures import sign_record, sign_storage
from kvbox.core.urls import record_url, records_path
from kvbox.service.codecs import decode_stream
from kvbox.service.records import ReadOptions

PAGE_SIZE = 50
TRAIL_LIMIT = 20  # cursors of earlier pages kept in the URL for "Previous"
PREVIEW_LIMIT = 1024 * 1024
ZIP_LINK_TTL_MS = 5 * 60 * 1000

# Stored bytes are served to the console's own pages only as a sandboxed document with no
# script, plugin or same-origin rights: uploaded HTML or SVG can never act as the console.
RAW_HEADERS = {
    "content-security-policy": "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
    "frame-ancestors 'self'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "SAMEORIGIN",
    "cross-origin-resource-policy": "same-origin",
    "cache-control": "private, no-cache",
}


@dataclass(frozen=True, slots=True)
class RecordRow:
    key: str
    size: int
    content_type: str
    modified_at: int
    expires_at: int | None  # by the record's own expiry or the store's rule; None: never


def api_record_url(console: Console, store: Store, key: str, permission: Permission) -> str:
    """The record's API URL as the API itself hands it out (`recordPublicUrl`): signed for
    callers who may write the store, plain for readers."""
    signature = sign_record(store.url_signing_secret, key) if permission >= Permission.WRITE else None
    return record_url(console.services.settings.base_url, store.id, key, signature=signature)


def _trail(value: str | None) -> list[str]:
    # Keys never contain commas, so a comma-separated list of cursors is unambiguous.
    return value.split(",")[-TRAIL_LIMIT:] if value is not None and value != "" else []


async def records_tab(console: Console, request: Request, caller: Caller) -> Response:
    resolved = await load_store(console, caller, request.path_params["store"])
    store = resolved.store
    qp = request.query_params
    prefix = qp.get("prefix") or None
    after = qp.get("after") or None
    trail = _trail(qp.get("trail"))
    page_no = page_number(qp.get("page"))
    records = console.services.records
    _, page = await records.list_keys(
        caller.principal, store.id, exclusive_start_key=after, limit=PAGE_SIZE, prefix=prefix
    )
    expiry = store.record_expiry
    rows = [
        RecordRow(i.key, i.size, i.content_type, i.modified_at, expires_at(expiry, i.key, i.modified_at, i.expires_at))
        for i in page.items
    ]
    next_url = prev_url = None
    base = {"prefix": prefix}
    if page.is_truncated and page.next_key:
        next_trail = ",".join([*trail, after or ""])
        next_url = present.store_url(store.id, **base, after=page.next_key, trail=next_trail, page=page_no + 1)
    if page_no > 1:
        if trail:
            prev_after = trail[-1] or None
            prev_url = present.store_url(
                store.id, **base, after=prev_after, trail=",".join(trail[:-1]) or None, page=page_no - 1
            )
        else:
            prev_url = present.store_url(store.id, **base)
    first = (page_no - 1) * PAGE_SIZE + 1
    links = {r.key: api_record_url(console, store, r.key, resolved.permission) for r in rows}
    return console.render(
        request, "store_records.html", caller, **store_context(console, resolved, "records"), rows=rows,
        prefix=prefix or "", page_no=page_no, first=first, next_url=next_url, prev_url=prev_url, links=links,
        page_size=PAGE_SIZE, max_record_size=records.max_record_size,
        pages=-(-store.record_count // PAGE_SIZE) if prefix is None else None,
    )  # fmt: skip


async def _read_prefix(body: AsyncGenerator[bytes, None] | None, encoding: str, limit: int) -> tuple[bytes, bool]:
    """Up to `limit` decoded bytes of a record, and whether there was more."""
    if body is None:
        return b"", False
    stream = decode_stream(body, encoding) if encoding != IDENTITY else body
    data = bytearray()
    more = False
    try:
        async for chunk in stream:
            data += chunk
            if len(data) > limit:
                more = True
                break
    finally:
        for it in (stream, body):
            with contextlib.suppress(Exception):
                await it.aclose()
    return bytes(data[:limit]), more


async def record_page(console: Console, request: Request, caller: Caller) -> Response:
    """One record: its metadata and a preview chosen by content type. Images and framed HTML
    are fetched by the browser from `raw_record`; the rest is read here (a bounded prefix)."""
    segment, key = request.path_params["store"], request.path_params["key"]
    resolved = await load_store(console, caller, segment)
    store = resolved.store
    records = console.services.records
    html_mode = "frame" if request.query_params.get("as") == "frame" else "source"
    head = await records.head(caller.principal, store.id, key)
    meta = head.meta
    kind = present.preview_kind(meta.content_type)
    preview: dict[str, Any] = {}
    if kind in ("json", "text", "binary") or (kind == "html" and html_mode == "source"):
        read = await records.get(caller.principal, store.id, key)
        meta = read.meta
        limit = present.HEX_BYTES if kind == "binary" else PREVIEW_LIMIT
        data, more = await _read_prefix(read.body, meta.encoding, limit)
        preview = _preview(kind, data, meta.content_type, truncated=more)
    return console.render(
        request, "record.html", caller, **store_context(console, resolved, "records"), meta=meta, kind=kind,
        preview=preview, link=api_record_url(console, store, key, resolved.permission), html_mode=html_mode,
        record_expires_at=head.expires_at,
    )  # fmt: skip


def _preview(kind: str, data: bytes, content_type: str, *, truncated: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"truncated": truncated, "shown": len(data)}
    if kind == "binary":
        out["hex"] = present.hex_dump(data)
        return out
    text = present.decode_text(data, content_type)
    if kind == "json" and not truncated:
        try:
            value = load_json(text, storable=False)
        except ValueError as err:
            out["error"] = f"This record is not valid JSON ({err}); it is shown as text."
        else:
            if len(data) <= present.JSON_TREE_LIMIT:
                out["tree"] = present.json_tree(value)
            out["text"] = present.pretty_json(value)
            return out
    out["text"] = text
    return out


async def raw_record(console: Console, request: Request, caller: Caller) -> Response:
    """The record's bytes for an `<img>`, a sandboxed `<iframe>`, a download, or an `<audio>` or
    `<video>` player, which asks for ranges as it seeks (`206`); decoded when stored compressed
    (and then whole)."""
    segment, key = request.path_params["store"], request.path_params["key"]
    options = ReadOptions(range=request.headers.get("range"), if_range=request.headers.get("if-range"))
    try:
        read = await console.services.records.get(caller.principal, segment, key, options=options)
    except RangeNotSatisfiableError as err:
        return Response(status_code=416, headers={**RAW_HEADERS, "content-range": f"bytes */{err.total}"})
    meta = read.meta
    headers = {**RAW_HEADERS, "etag": f'"{meta.etag}"', "last-modified": http_date(meta.modified_at)}
    if request.query_params.get("download") == "1":
        headers["content-disposition"] = f'attachment; filename="{meta.key.replace(chr(34), "")}"'
    body = read.body
    if body is not None and read.decode:
        body = decode_stream(body, meta.encoding)
    elif not read.decode:
        span = read.span
        headers["accept-ranges"] = "bytes"
        headers["content-length"] = str(meta.size if span is None else span.length)
        if span is not None:
            headers["content-range"] = span.content_range(meta.size)
    return StreamingResponse(
        body or _empty(),
        status_code=200 if read.span is None else 206,
        media_type=None,
        headers={"content-type": meta.content_type, **headers},
    )


async def _empty() -> AsyncIterator[bytes]:
    if False:  # pragma: no cover - an empty async generator
        yield b""


async def upload_record(console: Console, request: Request, caller: Caller) -> Response:
    """PUT the request body as a record, through the same service call as the API's PUT."""
    segment, key = request.path_params["store"], request.path_params["key"]
    try:
        validate_key(key)
        length = request.headers.get("content-length")
        _, meta = await console.services.records.put(
            caller.principal,
            segment,
            key,
            body=request.stream(),
            content_type=request.headers.get("content-type"),
            content_encoding=None,
            content_length=int(length) if length and length.isascii() and length.isdigit() else None,
        )
    except ClientDisconnect:
        log.info("PUT %s: request body ended early (client gone); nothing stored", request.url.path)
        exc = InvalidRequestError("The upload was cut short; nothing was stored.")
        return JSONResponse({"error": {"type": exc.type, "message": exc.message}}, status_code=exc.status)
    except KvboxError as exc:
        return JSONResponse({"error": {"type": exc.type, "message": exc.message}}, status_code=exc.status)
    return JSONResponse({"data": {"key": meta.key, "size": meta.size, "contentType": meta.content_type}}, 201)


async def delete_record(console: Console, request: Request, caller: Caller) -> Response:
    segment, key = request.path_params["store"], request.path_params["key"]
    form = form_of(request)
    back = form.get("back") or present.store_url(segment)
    if not back.startswith("/stores/"):
        back = present.store_url(segment)
    if form.get("confirm") != "yes":
        resolved = await load_store(console, caller, segment)
        return console.render(
            request, "confirm_record.html", caller, **store_context(console, resolved, "records"), key=key, back=back
        )
    try:
        await console.services.records.delete(caller.principal, segment, key)
    except KvboxError as exc:
        return console.redirect(back, flash=("error", exc.message))
    return console.redirect(back, flash=("ok", f"Record {key!r} was deleted."))


async def delete_prefix(console: Console, request: Request, caller: Caller) -> Response:
    """Delete every record under a prefix ("" for all) in one step, once the confirmation page
    was answered; the same service call as the API's DELETE .../records?prefix=."""
    segment = request.path_params["store"]
    form = form_of(request)
    prefix = form.get("prefix", "")
    back = present.store_url(segment, prefix=prefix or None)
    if form.get("confirm") != "yes":
        resolved = await load_store(console, caller, segment)
        return console.render(
            request, "confirm_prefix.html", caller, **store_context(console, resolved, "records"), prefix=prefix,
            back=back,
        )  # fmt: skip
    try:
        count = await console.services.records.delete_prefix(caller.principal, segment, prefix)
    except KvboxError as exc:
        return console.redirect(back, flash=("error", exc.message))
    under = f" whose key starts with {prefix!r}" if prefix else ""
    noun = "record" if count == 1 else "records"
    return console.redirect(present.store_url(segment), flash=("ok", f"Deleted {count:,} {noun}{under}."))


async def download_zip(console: Console, request: Request, caller: Caller) -> Response:
    """Check READ here, then hand the download to the API's ZIP endpoint with a storage
    signature that expires in minutes (a signature grants READ only)."""
    segment = request.path_params["store"]
    prefix = request.query_params.get("prefix") or None
    resolved, _ = await console.services.records.list_keys(caller.principal, segment, limit=1, prefix=prefix)
    store = resolved.store
    signature = sign_storage(store.url_signing_secret, store.id, expires_at_ms=console.now_ms() + ZIP_LINK_TTL_MS)
    url = present.with_query(
        console.services.settings.base_url + records_path(store.id),
        prefix=prefix, signature=signature,
    )  # fmt: skip
    return RedirectResponse(url, status_code=303)
