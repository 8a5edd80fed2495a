"""Record endpoints: GET/HEAD/PUT/POST/DELETE one record (conditional, and ranged for GET),
list keys, download all as ZIP."""

from __future__ import annotations

import time
import zipfile
from collections.abc import AsyncIterator
from typing import IO, cast

from kvbox.api.envelopes import keys_body, public_base, record_url
from kvbox.api.http import JSON_CONTENT_TYPE, Request, Send, send_bytes, send_empty, send_json, send_stream
from kvbox.core.clock import http_date, iso_ms
from kvbox.core.conditions import ReadConditions, write_condition
from kvbox.core.encoding import IDENTITY
from kvbox.core.errors import InvalidParameterError
from kvbox.core.expiry import parse_record_expiry
from kvbox.core.models import Condition, RecordMeta, Store
from kvbox.service.codecs import decode_stream
from kvbox.service.container import Services
from kvbox.service.principal import Principal
from kvbox.service.records import ReadOptions, RecordRead
from kvbox.service.stores import MAX_PAGE

# Stored HTML or SVG must never run script in this server's origin.
SANDBOX_HEADERS = [
    (b"content-security-policy", b"sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"cross-origin"),
]
FIXED_RECORD_HEADERS = [(b"cache-control", b"private, no-cache"), (b"vary", b"Accept-Encoding"), *SANDBOX_HEADERS]


# The headers of a whole record sent as stored, by etag (unique per write): a record read
# again and again is described once.
_PLAIN_HEADERS: dict[str, list[tuple[bytes, bytes]]] = {}
_PLAIN_HEADERS_MAX = 4096


def _plain_headers(meta: RecordMeta) -> list[tuple[bytes, bytes]]:
    headers = _PLAIN_HEADERS.get(meta.etag)
    if headers is None or headers[0][1] != meta.key.encode():
        headers = [
            (b"kvbox-key", meta.key.encode()),  # checked above, dropped below: an etag names one write of one key
            (b"content-type", meta.content_type.encode("latin-1", "replace")),
            (b"etag", f'"{meta.etag}"'.encode()),
            (b"last-modified", http_date(meta.modified_at).encode()),
            *FIXED_RECORD_HEADERS,
            (b"content-length", str(meta.size).encode()),
            (b"accept-ranges", b"bytes"),
        ]
        if meta.encoding != IDENTITY:
            headers.append((b"content-encoding", meta.encoding.encode()))
        if len(_PLAIN_HEADERS) >= _PLAIN_HEADERS_MAX:
            _PLAIN_HEADERS.clear()
        _PLAIN_HEADERS[meta.etag] = headers
    return headers[1:]


def _record_headers(req: Request, read: RecordRead) -> list[tuple[bytes, bytes]]:
    """Response headers for a record: sent as stored (whole or a span of it, with its length
    and `Accept-Ranges`), or decoded on the way out (no length known, no ranges)."""
    meta = read.meta
    if read.expires_at is None and not read.decode and read.span is None and not read.not_modified:
        headers = _plain_headers(meta)
        if "attachment" in req.query and req.bool_param("attachment"):
            headers.append(_disposition(meta))
        return headers
    expiry = [(b"kvbox-expires-at", iso_ms(read.expires_at).encode())] if read.expires_at is not None else []
    if read.not_modified:  # a 304 describes the record but sends no body and no length
        return [
            (b"etag", f'"{meta.etag}"'.encode()),
            (b"last-modified", http_date(meta.modified_at).encode()),
            *FIXED_RECORD_HEADERS,
            *expiry,
        ]
    headers = [
        (b"content-type", meta.content_type.encode("latin-1", "replace")),
        (b"etag", f'"{meta.etag}"'.encode()),
        (b"last-modified", http_date(meta.modified_at).encode()),
        *FIXED_RECORD_HEADERS,
    ]
    headers += expiry
    if not read.decode:
        span = read.span
        length = meta.size if span is None else span.length
        headers += [(b"content-length", str(length).encode()), (b"accept-ranges", b"bytes")]
        if span is not None:
            headers.append((b"content-range", span.content_range(meta.size).encode()))
        if meta.encoding != IDENTITY:
            headers.append((b"content-encoding", meta.encoding.encode()))
    if req.bool_param("attachment"):
        headers.append(_disposition(meta))
    return headers


def _disposition(meta: RecordMeta) -> tuple[bytes, bytes]:
    filename = meta.key.replace('"', "")
    return (b"content-disposition", f'attachment; filename="{filename}"'.encode())


def _read_options(req: Request) -> ReadOptions:
    """The preconditions, range and accepted encodings of a GET or HEAD (a HEAD has no range)."""
    h = req.headers
    accept_encoding = h.get("accept-encoding")
    if "range" not in h and "if-none-match" not in h and "if-match" not in h and "if-modified-since" not in h:
        return ReadOptions(None, None, None, accept_encoding)  # the common read: nothing to evaluate
    conditions = ReadConditions(h.get("if-match"), h.get("if-none-match"), h.get("if-modified-since"))
    ranged = req.method == "GET"
    return ReadOptions(
        conditions, h.get("range") if ranged else None, h.get("if-range") if ranged else None, accept_encoding
    )


async def get_record(req: Request, send: Send, svc: Services, who: Principal, segment: str, key: str) -> None:
    signature = req.query.get("signature") or None
    options = _read_options(req)
    if req.method == "HEAD":
        head = await svc.records.head(who, segment, key, signature=signature, options=options)
        await send_stream(send, 304 if head.not_modified else 200, _record_headers(req, head), None)
        return
    read = await svc.records.get(who, segment, key, signature=signature, options=options)
    headers = _record_headers(req, read)
    if read.not_modified:
        await send_stream(send, 304, headers, None)
        return
    status = 200 if read.span is None else 206
    meta = read.meta
    if meta.blob_id is None and not read.decode:
        data = meta.inline or b""
        await send_bytes(send, status, headers, data if read.span is None else data[read.span.start : read.span.end])
        return
    body = read.body
    if read.decode and body is not None:
        body = decode_stream(body, meta.encoding)
    await send_stream(send, status, headers, body)


async def put_record(req: Request, send: Send, svc: Services, who: Principal, segment: str, key: str) -> None:
    query = req.query
    expires_at = None
    if "expiresIn" in query or "expiresAt" in query:
        expires_at = parse_record_expiry(query.get("expiresIn"), query.get("expiresAt"), svc.clock.now_ms())
    resolved, meta = await svc.records.put(
        who,
        segment,
        key,
        body=req.body_chunks(),
        content_type=req.header("content-type"),
        content_encoding=req.header("content-encoding"),
        content_length=req.content_length(),
        condition=_write_condition(req),
        expires_at=expires_at,
    )
    location = record_url(public_base(req.scope, svc.settings), resolved.store, key, signed=False)
    await send_json(send, 201, {}, [(b"location", location.encode()), (b"etag", f'"{meta.etag}"'.encode())])


def _write_condition(req: Request) -> Condition | None:
    """The condition of a PUT, POST or DELETE (`If-Match`, `If-None-Match`); None for the
    common unconditional write, without parsing anything."""
    h = req.headers
    if "if-match" not in h and "if-none-match" not in h:
        return None
    return write_condition(h.get("if-match"), h.get("if-none-match"))


async def delete_record(req: Request, send: Send, svc: Services, who: Principal, segment: str, key: str) -> None:
    await svc.records.delete(who, segment, key, condition=_write_condition(req))
    await send_empty(send, 204)


async def delete_records(req: Request, send: Send, svc: Services, who: Principal, segment: str) -> None:
    """Delete by prefix: `?prefix=P` is required; an empty value means every record."""
    prefix = req.query.get("prefix")
    if prefix is None:
        raise InvalidParameterError("Parameter 'prefix' is required (an empty value deletes every record).")
    count = await svc.records.delete_prefix(who, segment, prefix)
    await send_json(send, 200, {"data": {"deletedCount": count}})


async def list_keys(req: Request, send: Send, svc: Services, who: Principal, segment: str) -> None:
    limit = req.int_param("limit", 0, maximum=MAX_PAGE) or MAX_PAGE
    start = req.query.get("exclusiveStartKey") or None
    resolved, page = await svc.records.list_keys(
        who,
        segment,
        exclusive_start_key=start,
        limit=limit,
        prefix=req.query.get("prefix") or None,
        collection=req.query.get("collection") or None,
        signature=req.query.get("signature") or None,
    )
    body = keys_body(
        page,
        store=resolved.store,
        permission=resolved.permission,
        base_url=public_base(req.scope, svc.settings),
        limit=limit,
        exclusive_start_key=start,
        by_signature=resolved.by_signature,
    )
    headers = [(b"content-type", JSON_CONTENT_TYPE), (b"content-length", str(len(body)).encode())]
    await send_bytes(send, 200, headers, body)


class _Spool:
    """A write-only sink for zipfile; the bytes written so far are taken out as chunks."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._pos = 0

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        self._pos += len(data)
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        return None

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


async def _zip_stream(svc: Services, store: Store, prefix: str | None, collection: str | None) -> AsyncIterator[bytes]:
    spool = _Spool()
    sink = cast(IO[bytes], spool)  # zipfile only writes, tells and flushes on a non-seekable sink
    with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        async for meta, chunks in svc.records.iterate_for_export(store, prefix=prefix, collection=collection):
            info = zipfile.ZipInfo(meta.key, date_time=_zip_time(meta.modified_at))
            info.compress_type = zipfile.ZIP_DEFLATED
            body = decode_stream(chunks, meta.encoding) if meta.encoding != IDENTITY else chunks
            with zf.open(info, mode="w", force_zip64=True) as entry:
                async for chunk in body:
                    entry.write(chunk)
                    if spool.pending:
                        yield spool.take()
            yield spool.take()
    yield spool.take()


def _zip_time(ms: int) -> tuple[int, int, int, int, int, int]:
    t = time.gmtime(ms / 1000)
    return (max(t.tm_year, 1980), t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec)


async def download_records(req: Request, send: Send, svc: Services, who: Principal, segment: str) -> None:
    prefix = req.query.get("prefix") or None
    collection = req.query.get("collection") or None
    resolved, first = await svc.records.list_keys(
        who, segment, limit=1, prefix=prefix, collection=collection, signature=req.query.get("signature") or None
    )
    del first  # the check above validates access, prefix and collection before streaming starts
    name = (resolved.store.name or resolved.store.id).replace('"', "")
    headers = [
        (b"content-type", b"application/zip"),
        (b"content-disposition", f'attachment; filename="{name}.zip"'.encode()),
    ]
    await send_stream(send, 200, headers, _zip_stream(svc, resolved.store, prefix, collection))
