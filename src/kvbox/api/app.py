"""The API's ASGI app: route lookup, CORS preflight, authentication, rate limits, errors.

It serves the paths under `/v2` and `/health` (`owns` tells which); the server puts it
beside the console. Every endpoint is a row of `routes.ROUTES`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable
from urllib.parse import unquote

from kvbox.api.errors import log, send_error
from kvbox.api.http import ClientDisconnectedError, Message, Receive, Request, Scope, Send, send_empty
from kvbox.api.logs import STORE_KEY, USER_KEY
from kvbox.api.middleware import ROUTE_KEY
from kvbox.api.routes import API_ROOTS, Bucket, Route, RouteTable
from kvbox.core.errors import InvalidRequestError, MethodNotAllowedError, PageNotFoundError, UriTooLongError
from kvbox.service.container import Services
from kvbox.service.principal import ANONYMOUS, Principal

PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (
        b"access-control-allow-headers",
        b"Authorization, Content-Type, Content-Encoding, If-Match, If-None-Match, If-Modified-Since, Range, If-Range, "
        b"Last-Event-ID",
    ),
    (b"access-control-max-age", b"86400"),
]

# After an error, up to this much of an unread request body is read and dropped.
DISCARD_LIMIT = 16 * 1024 * 1024
# Longer path + query strings get a 414 in the envelope; granian's own limit (64 KiB) answers
# a bare 414 before kvbox sees the request.
MAX_URI_LENGTH = 16 * 1024


def owns(scope: Scope) -> bool:
    """Whether a request's path belongs to the API (`/v2/...`, `/health...`), matched or not."""
    raw: bytes = scope.get("raw_path") or scope["path"].encode("latin-1", "replace")
    if raw.startswith(b"/v2/"):  # the record path: no parsing needed
        return True
    path = raw.decode("latin-1")
    head = path.split("?", 1)[0].lstrip("/").split("/", 1)[0]
    return (unquote(head) if "%" in head else head) in API_ROOTS


class ApiApp:
    """The Apify-compatible API over one process's services."""

    def __init__(self, services: Services, routes: RouteTable | None = None) -> None:
        self.services = services
        self.routes = routes or RouteTable()
        limiter = services.limiter
        # The X-RateLimit-Limit header of each bucket, formatted once.
        self._limit_headers = {
            bucket: (
                b"x-ratelimit-limit",
                str(limiter.limit_for(record_op=bucket is Bucket.RECORDS, store_op=bucket is Bucket.STORE)).encode(),
            )
            for bucket in Bucket
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.services.freshness.begin()  # the index's generations, read once for this request
        req = Request(scope, receive)
        route = self.routes.match(req.segments)
        if route is not None:
            scope[ROUTE_KEY] = route.path  # the metrics' and access log's route label
            if route.store_at is not None:
                scope[STORE_KEY] = req.segments[route.store_at]
        if self.services.limiter.limits.enabled:
            send = self._with_limit_header(send, route.bucket if route is not None else Bucket.USER)
        try:
            if len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"") > MAX_URI_LENGTH:
                raise UriTooLongError(f"The request URI is longer than {MAX_URI_LENGTH} bytes.")
            await self._dispatch(req, send, route)
        except ClientDisconnectedError:
            await _cut_short(req, send)
        except Exception as exc:  # every failure leaves as an error envelope
            await _fail(req, send, exc)

    def _with_limit_header(self, send: Send, bucket: Bucket) -> Send:
        header = self._limit_headers[bucket]

        def send_with_limit(message: Message) -> Awaitable[None]:
            # Hands back the server's own awaitable: no coroutine of ours per message.
            if message["type"] == "http.response.start":
                headers = message["headers"]
                # A 429 names the limit it hit (already in its headers), which may not be the route's own.
                if message["status"] != 429 or not any(name == b"x-ratelimit-limit" for name, _ in headers):
                    headers.append(header)
            return send(message)

        return send_with_limit

    async def _dispatch(self, req: Request, send: Send, route: Route | None) -> None:
        method = req.method
        if route is None:
            if method == "OPTIONS":
                await send_empty(send, 204, PREFLIGHT_HEADERS)
                return
            raise PageNotFoundError()
        handler = route.handlers.get(method)
        if handler is None:
            if method == "OPTIONS":
                await send_empty(send, 204, [*PREFLIGHT_HEADERS, (b"allow", ", ".join(route.allowed).encode())])
                return
            raise MethodNotAllowedError((*route.allowed, "OPTIONS"))
        who = ANONYMOUS
        if route.authenticate:
            auth = self.services.auth
            who = await (auth.claim if method in route.confirming else auth.authenticate)(req.token())
            if who.user is not None:
                req.scope[USER_KEY] = who.user.username
            self._limit(req, who)
        await handler(req, send, self.services, who, *route.arguments(req.segments))

    def _limit(self, req: Request, who: Principal) -> None:
        """The per-user budget; per-store budgets are taken once the store is resolved."""
        if who.user is not None:
            user_key = who.user.id
        else:
            client = req.scope.get("client")
            user_key = "ip:" + (client[0] if client else "unknown")
        self.services.limiter.check_user(user_key)


def _where(req: Request) -> str:
    return f"{req.method} {req.scope.get('path', '')}: "


async def _fail(req: Request, send: Send, exc: Exception) -> None:
    """Answer the error; if the response had already begun, the connection is all that is left to end."""
    try:
        await send_error(send, exc, head=req.method == "HEAD", where=_where(req))
    except Exception:  # the response had started (a stream failed midway) or the client is gone
        return
    await req.discard_body(DISCARD_LIMIT)


async def _cut_short(req: Request, send: Send) -> None:
    """The body ended before it was complete: the client went away mid-upload, or sent a
    malformed chunked body. Nothing was stored; one line says so, and the client (if it is
    still there) gets a 400."""
    log.info("%srequest body ended early (client gone or malformed chunked encoding); nothing stored", _where(req))
    err = InvalidRequestError("The request body ended before it was complete; nothing was stored.")
    with contextlib.suppress(Exception):
        await send_error(send, err)
