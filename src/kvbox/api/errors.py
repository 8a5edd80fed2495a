"""The one place where errors become HTTP responses, always in the Apify error envelope.

The rule: whatever a client can cause is a `KvboxError` with a 4xx status, answered and
not logged. A storage that is full or down answers 507 or 503 with one warning line. Any
other exception that escapes a handler is a bug in kvbox: it is logged once, with its
traceback and the request it came from, and answered `500` without details.
"""

from __future__ import annotations

import logging
from typing import Any

from kvbox.api.http import Send, send_json
from kvbox.core.errors import (
    InsufficientStorageError,
    KvboxError,
    MethodNotAllowedError,
    RangeNotSatisfiableError,
    RateLimitExceededError,
    StorageUnavailableError,
)

log = logging.getLogger("kvbox.api")


def error_payload(err: KvboxError) -> dict[str, Any]:
    error: dict[str, Any] = {"type": err.type, "message": err.message}
    if err.data:
        error["data"] = err.data
    return {"error": error}


def as_kvbox_error(exc: BaseException, where: str = "") -> KvboxError:
    """The error to answer for `exc`, logged as the rule above says (`where`: the request)."""
    if isinstance(exc, KvboxError):
        if isinstance(exc, InsufficientStorageError | StorageUnavailableError):
            log.warning("%s%s: %s", where, exc.type, exc.__cause__ or exc)
        elif exc.status >= 500:
            log.error("%sstorage failure: %s", where, exc, exc_info=exc)
        return exc
    log.error("%sunhandled error", where, exc_info=exc)
    return KvboxError()


def error_headers(err: KvboxError) -> list[tuple[bytes, bytes]]:
    """Headers an error answer carries besides the envelope's own."""
    if isinstance(err, MethodNotAllowedError):
        return [(b"allow", ", ".join(err.allowed).encode())]
    if isinstance(err, RateLimitExceededError):
        # The limit that was exceeded (per user or per store), not the route's usual one.
        return [(b"x-ratelimit-limit", str(err.limit).encode())]
    if isinstance(err, StorageUnavailableError):
        return [(b"retry-after", str(err.retry_after).encode())]
    if isinstance(err, RangeNotSatisfiableError):
        return [(b"content-range", f"bytes */{err.total}".encode())]
    return []


async def send_error(send: Send, exc: BaseException, *, head: bool = False, where: str = "") -> None:
    err = as_kvbox_error(exc, where)
    headers = error_headers(err)
    if head:
        await send(
            {
                "type": "http.response.start",
                "status": err.status,
                "headers": [(b"content-type", b"application/json; charset=utf-8"), *headers],
            }
        )
        await send({"type": "http.response.body", "body": b""})
        return
    await send_json(send, err.status, error_payload(err), headers)
