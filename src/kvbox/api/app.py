"""The API's ASGI app: route lookup, CORS preflight, authentication, rate limits, errors.

It serves the paths under `/v2` and `/health` (`owns` tells which); the server puts it
beside the console. Every endpoint is a row of `routes.ROUTES`.
"""

from __future__ import annotations

from urllib.parse import unquote

from kvbox.api.errors import send_error
from kvbox.api.http import Message, Receive, Request, Scope, Send, send_empty
from kvbox.api.middleware import ROUTE_KEY, USER_KEY
from kvbox.api.routes import API_ROOTS, Bucket, Route, RouteTable
from kvbox.core.errors import MethodNotAllowedError, PageNotFoundError
from kvbox.service.container import Services
from kvbox.service.principal import ANONYMOUS, Principal

PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"Authorization, Content-Type, Content-Encoding, If-None-Match"),
    (b"access-control-max-age", b"86400"),
]

# After an error, up to this much of an unread request body is read and dropped.
DISCARD_LIMIT = 16 * 1024 * 1024


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
        req = Request(scope, receive)
        route = self.routes.match(req.segments)
        if route is not None:
            scope[ROUTE_KEY] = route.path  # the metrics' and access log's route label
        if self.services.limiter.limits.enabled:
            send = self._with_limit_header(send, route.bucket if route is not None else Bucket.USER)
        try:
            await self._dispatch(req, send, route)
        except Exception as exc:  # every failure leaves as an error envelope
            await send_error(send, exc, head=req.method == "HEAD")
            await req.discard_body(DISCARD_LIMIT)

    def _with_limit_header(self, send: Send, bucket: Bucket) -> Send:
        header = self._limit_headers[bucket]

        async def send_with_limit(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message["headers"], header]
            await send(message)

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
            who = await self.services.auth.authenticate(req.token())
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
