"""The one place where errors become HTTP responses, always in the Apify error envelope."""

from __future__ import annotations

import logging
from typing import Any

from kvbox.api.http import Send, send_json
from kvbox.core.errors import KvboxError, MethodNotAllowedError, RangeNotSatisfiableError

log = logging.getLogger("kvbox.api")


def error_payload(err: KvboxError) -> dict[str, Any]:
    error: dict[str, Any] = {"type": err.type, "message": err.message}
    if err.data:
        error["data"] = err.data
    return {"error": error}


def as_kvbox_error(exc: BaseException) -> KvboxError:
    if isinstance(exc, KvboxError):
        if exc.status >= 500:
            log.error("storage failure: %s", exc, exc_info=exc)
        return exc
    log.error("unhandled error", exc_info=exc)
    return KvboxError()


async def send_error(send: Send, exc: BaseException, *, head: bool = False) -> None:
    err = as_kvbox_error(exc)
    headers: list[tuple[bytes, bytes]] = []
    if isinstance(err, MethodNotAllowedError):
        headers.append((b"allow", ", ".join(err.allowed).encode()))
    elif isinstance(err, RangeNotSatisfiableError):
        headers.append((b"content-range", f"bytes */{err.total}".encode()))
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
