"""A thin request/response layer over raw ASGI, kept off the hot path's way."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from kvbox.core.errors import InvalidParameterError, InvalidTokenError, RequestTooLargeError
from kvbox.core.parsing import parse_int

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON_CONTENT_TYPE = b"application/json; charset=utf-8"
# A Content-Length of more digits than this is larger than any body kvbox accepts.
MAX_LENGTH_DIGITS = 18
CORS_HEADERS: list[tuple[bytes, bytes]] = [
    (b"access-control-allow-origin", b"*"),
    (
        b"access-control-expose-headers",
        b"Content-Length, Content-Encoding, Content-Disposition, Content-Range, Accept-Ranges, ETag, "
        b"Last-Modified, Location, X-RateLimit-Limit, Kvbox-Expires-At",
    ),
]


class ClientDisconnectedError(Exception):
    """The client went away while its body was being read."""


class Request:
    __slots__ = ("_headers", "_query", "body_done", "method", "receive", "scope", "segments")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else scope["path"]
        path = path.split("?", 1)[0].strip("/")
        if not path:
            self.segments: list[str] = []
        elif "%" in path:
            # Split before percent-decoding so an encoded "/" stays inside its segment.
            self.segments = [unquote(s) for s in path.split("/")]
        else:
            self.segments = path.split("/")
        self._query: dict[str, str] | None = None
        self._headers: dict[str, str] | None = None
        self.body_done = False

    @property
    def query(self) -> dict[str, str]:
        if self._query is None:
            qs = self.scope.get("query_string", b"").decode("latin-1")
            if "%00" in qs or "\x00" in qs:
                # No name, key, cursor or prefix can hold NUL, and PostgreSQL cannot compare one.
                raise InvalidParameterError("Query parameters may not contain NUL characters.")
            self._query = dict(parse_qsl(qs, keep_blank_values=True)) if qs else {}
        return self._query

    @property
    def headers(self) -> dict[str, str]:
        if self._headers is None:
            self._headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in self.scope["headers"]}
        return self._headers

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def token(self) -> str | None:
        """The API token from `Authorization: Bearer` (preferred) or `?token=`."""
        auth = self.headers.get("authorization")
        if auth is not None:
            scheme, _, value = auth.strip().partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise InvalidTokenError("The Authorization header must be 'Bearer <token>'.")
            return value.strip()
        return self.query.get("token")

    def content_length(self) -> int | None:
        value = self.headers.get("content-length")
        if value is None:
            return None
        value = value.strip()
        # ASCII digits only: `str.isdigit` also accepts "²", which `int` refuses.
        if not (value.isascii() and value.isdigit()) or len(value) > MAX_LENGTH_DIGITS:
            raise InvalidParameterError("The Content-Length header is not valid.")
        return int(value)

    async def body_chunks(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.body_done = True
                raise ClientDisconnectedError()
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                self.body_done = True
                return

    async def discard_body(self, limit: int) -> None:
        """Read and drop what is left of a body the handler refused, up to `limit` bytes.

        A client still sending when the response arrives may otherwise see a reset
        connection instead of the error; beyond the limit the connection is left to close.
        """
        if self.body_done or self.method in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return
        try:
            length = self.content_length()
        except InvalidParameterError:
            return
        if length is not None and length > limit:
            return
        seen = 0
        with contextlib.suppress(ClientDisconnectedError):
            async for chunk in self.body_chunks():
                seen += len(chunk)
                if seen > limit:
                    return

    async def read_body(self, limit: int) -> bytes:
        length = self.content_length()
        if length is not None and length > limit:
            raise RequestTooLargeError(limit, length)
        data = bytearray()
        async for chunk in self.body_chunks():
            data += chunk
            if len(data) > limit:
                raise RequestTooLargeError(limit)
        return bytes(data)

    def bool_param(self, name: str, default: bool = False) -> bool:
        value = self.query.get(name)
        if value is None or value == "":
            return default
        v = value.lower()
        if v in ("1", "true"):
            return True
        if v in ("0", "false"):
            return False
        raise InvalidParameterError(f"Parameter '{name}' must be a boolean (true, false, 1 or 0).")

    def int_param(self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.query.get(name)
        if value is None or value == "":
            return default
        try:
            n = parse_int(value, minimum=minimum)
        except ValueError as err:
            raise InvalidParameterError(f"Parameter '{name}' {err}.") from None
        return min(n, maximum) if maximum is not None else n


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def json_bytes(payload: Any) -> bytes:
    return _ENCODER.encode(payload).encode()


async def send_json(send: Send, status: int, payload: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json_bytes(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", JSON_CONTENT_TYPE),
                (b"content-length", str(len(body)).encode()),
                *CORS_HEADERS,
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_empty(send: Send, status: int, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [*CORS_HEADERS, *headers]})
    await send({"type": "http.response.body", "body": b""})


async def send_bytes(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """A whole body in one message: the cheapest response the server can send."""
    await send({"type": "http.response.start", "status": status, "headers": [*CORS_HEADERS, *headers]})
    await send({"type": "http.response.body", "body": body})


async def send_stream(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], chunks: AsyncIterator[bytes] | None
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [*CORS_HEADERS, *headers]})
    if chunks is not None:
        async for chunk in chunks:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})
