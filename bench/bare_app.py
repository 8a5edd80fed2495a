"""The baseline: a bare ASGI app answering every request with a constant 1 KiB body.

Served by granian exactly like kvbox (same worker count and defaults), it measures what
the server, the loopback and the load generator cost before kvbox does any work.
`GET /stream?bytes=N` streams N bytes from memory in 1 MiB chunks: the HTTP path's ceiling
for large transfers, without any disk.
"""

from __future__ import annotations

from typing import Any

BODY = b"x" * 1024
CHUNK = b"y" * (1 << 20)
_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"content-type", b"application/octet-stream"),
        (b"content-length", str(len(BODY)).encode()),
    ],
}
_BODY = {"type": "http.response.body", "body": BODY}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    # Drain a request body (PUT) so the connection stays usable.
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    if scope["path"] == "/stream":
        await _stream(scope, send)
        return
    await send(_START)
    await send(_BODY)


async def _stream(scope: dict[str, Any], send: Any) -> None:
    query = dict(p.split("=", 1) for p in scope["query_string"].decode().split("&") if "=" in p)
    remaining = int(query.get("bytes", "0"))
    headers = [(b"content-type", b"application/octet-stream"), (b"content-length", str(remaining).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    while remaining > 0:
        chunk = CHUNK if remaining >= len(CHUNK) else CHUNK[:remaining]
        remaining -= len(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
