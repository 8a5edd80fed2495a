"""Record endpoints: GET/HEAD/PUT/POST/DELETE one record, list keys, download all as ZIP."""

from __future__ import annotations

import time
import zipfile
from collections.abc import AsyncIterator
from typing import IO, cast

from kvbox.api.envelopes import keys_body, record_url
from kvbox.api.http import JSON_CONTENT_TYPE, Request, Send, send_bytes, send_empty, send_json, send_stream
from kvbox.core.clock import http_date, iso_ms
from kvbox.core.encoding import IDENTITY, accepts
from kvbox.core.errors import InvalidParameterError
from kvbox.core.expiry import parse_record_expiry
from kvbox.core.models import RecordMeta, Store
from kvbox.service.codecs import decode_stream
from kvbox.service.container import Services
from kvbox.service.principal import Principal
from kvbox.service.stores import MAX_PAGE

# Stored HTML or SVG must never run script in this server's origin.
SANDBOX_HEADERS = [
    (b"content-security-policy", b"sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"cross-origin"),
]
FIXED_RECORD_HEADERS = [(b"cache-control", b"private, no-cache"), (b"vary", b"Accept-Encoding"), *SANDBOX_HEADERS]


def _record_headers(
    req: Request, meta: RecordMeta, expires_at: int | None = None
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """Response headers for a record, and whether the body must be decompressed on the way out."""
    headers = [
        (b"content-type", meta.content_type.encode("latin-1", "replace")),
        (b"etag", f'"{meta.etag}"'.encode()),
        (b"last-modified", http_date(meta.modified_at).encode()),
        *FIXED_RECORD_HEADERS,
    ]
    if expires_at is not None:
        headers.append((b"kvbox-expires-at", iso_ms(expires_at).encode()))
    decode = meta.encoding != IDENTITY and not accepts(req.header("accept-encoding"), meta.encoding)
    if not decode:
        headers.append((b"content-length", str(meta.size).encode()))
        if meta.encoding != IDENTITY:
            headers.append((b"content-encoding", meta.encoding.encode()))
    if req.bool_param("attachment"):
        filename = meta.key.replace('"', "")
        headers.append((b"content-disposition", f'attachment; filename="{filename}"'.encode()))
    return headers, decode


def _not_modified(req: Request, meta: RecordMeta) -> bool:
    tags = req.header("if-none-match")
    if not tags:
        return False
    wanted = {t.strip().removeprefix("W/") for t in tags.split(",")}
    return "*" in wanted or f'"{meta.etag}"' in wanted


async def get_record(req: Request, send: Send, svc: Services, who: Principal, segment: str, key: str) -> None:
    signature = req.query.get("signature") or None
    if req.method == "HEAD":
        head = await svc.records.head(who, segment, key, signature=signature)
        headers, _ = _record_headers(req, head.meta, head.expires_at)
        await send_stream(send, 200, headers, None)
        return
    read = await svc.records.get(who, segment, key, signature=signature)
    headers, decode = _record_headers(req, read.meta, read.expires_at)
    if _not_modified(req, read.meta):
        await send_stream(send, 304, [h for h in headers if h[0] != b"content-length"], None)
        return
    if read.meta.blob_id is None and not decode:
        await send_bytes(send, 200, headers, read.meta.inline or b"")
        return
    body = read.body
    if decode and body is not None:
        body = decode_stream(body, read.meta.encoding)
    await send_stream(send, 200, headers, body)


async def put_record(req: Request, send: Send, svc: Services, who: Principal, segment: str, key: str) -> None:
    query = req.query
    expires_at = None
    if "expiresIn" in query or "expiresAt" in query:
        expires_at = parse_record_expiry(query.get("expiresIn"), query.get("expiresAt"), svc.clock.now_ms())
    resolved, _ = await svc.records.put(
        who,
        segment,
        key,
        body=req.body_chunks(),
        content_type=req.header("content-type"),
        content_encoding=req.header("content-encoding"),
        content_length=req.content_length(),
        expires_at=expires_at,
    )
    location = record_url(svc.settings.base_url, resolved.store, key, signed=False)
    await send_json(send, 201, {}, [(b"location", location.encode())])


async def delete_record(req: Request, send: Send, svc: Services, who: Principal, segment: str, key: str) -> None:
    await svc.records.delete(who, segment, key)
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
        base_url=svc.settings.base_url,
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
