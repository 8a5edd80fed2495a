"""The ASGI application: routing, rate limits, CORS preflight, health, lifespan.

Routing is a direct match on path segments: the record GET/PUT path carries no framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from kvbox.api import records, sharing, stores
from kvbox.api.errors import send_error
from kvbox.api.http import Message, Receive, Request, Scope, Send, send_empty, send_json
from kvbox.core.errors import MethodNotAllowedError, PageNotFoundError
from kvbox.service.container import Services, build_services
from kvbox.service.principal import Principal
from kvbox.service.settings import Settings

log = logging.getLogger("kvbox.api")

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"Authorization, Content-Type, Content-Encoding, If-None-Match"),
    (b"access-control-max-age", b"86400"),
]

# After an error, up to this much of an unread request body is read and dropped.
DISCARD_LIMIT = 16 * 1024 * 1024

# Route kinds: which methods they answer and which rate-limit bucket they draw from.
COLLECTION, STORE, KEYS, ZIP, RECORD, GRANTS, GRANT, ME = range(8)
METHODS: dict[int, tuple[str, ...]] = {
    COLLECTION: ("GET", "POST"),
    STORE: ("GET", "PUT", "DELETE"),
    KEYS: ("GET",),
    ZIP: ("GET",),
    RECORD: ("GET", "HEAD", "PUT", "POST", "DELETE"),
    GRANTS: ("GET",),
    GRANT: ("PUT", "DELETE"),
    ME: ("GET", "PUT"),
}


def match(seg: list[str]) -> int | None:
    """The route kind for a path, or None."""
    n = len(seg)
    if n < 2 or seg[0] != "v2":
        return None
    if seg[1] == "key-value-stores":
        if n == 2:
            return COLLECTION
        if n == 3:
            return STORE
        if n == 4:
            return {"keys": KEYS, "records": ZIP, "grants": GRANTS}.get(seg[3])
        if n == 5:
            return {"records": RECORD, "grants": GRANT}.get(seg[3])
        return None
    if seg[1] == "users" and n == 3 and seg[2] == "me":
        return ME
    return None


class KvboxApp:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._console: ASGIApp | None = None  # built on first use: API-only servers never load it
        self._background: asyncio.Task[None] | None = None
        # The X-RateLimit-Limit header each kind of route advertises, formatted once.
        limiter = services.limiter
        self._limit_headers = {
            kind: (
                b"x-ratelimit-limit",
                str(limiter.limit_for(record_op=kind == RECORD, store_op=kind not in (None, COLLECTION, ME))).encode(),
            )
            for kind in (None, *METHODS)
        }

    @property
    def console(self) -> ASGIApp:
        """The web console, for every path outside /v2 and /health."""
        if self._console is None:
            from kvbox.console import create_console

            self._console = create_console(self.services)
        return self._console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_background()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start_background(self) -> None:
        if self._background is None:
            self._background = asyncio.get_running_loop().create_task(self.services.background())

    async def aclose(self) -> None:
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._background
            self._background = None
        await self.services.close()

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        req = Request(scope, receive)
        kind = match(req.segments)
        if kind is None and req.segments[:1] not in (["v2"], ["health"]):
            await self.console(scope, receive, send)
            return
        limiter = self.services.limiter
        if limiter.limits.enabled:
            header = self._limit_headers[kind]
            inner = send

            async def send_with_limit(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message["headers"], header]
                await inner(message)

            send = send_with_limit
        try:
            await self._route(req, send, kind)
        except Exception as exc:  # every failure leaves as an error envelope
            await send_error(send, exc, head=req.method == "HEAD")
            await req.discard_body(DISCARD_LIMIT)

    def _limit(self, req: Request, who: Principal) -> None:
        """The per-user budget; per-store budgets are taken once the store is resolved."""
        if who.user is not None:
            user_key = who.user.id
        else:
            client = req.scope.get("client")
            user_key = "ip:" + (client[0] if client else "unknown")
        self.services.limiter.check_user(user_key)

    async def _route(self, req: Request, send: Send, kind: int | None) -> None:
        method = req.method
        if kind is None:
            if req.segments == ["health"]:
                if method == "OPTIONS":
                    await send_empty(send, 204, [*PREFLIGHT_HEADERS, (b"allow", b"GET, HEAD")])
                    return
                if method not in ("GET", "HEAD"):
                    raise MethodNotAllowedError(("GET", "HEAD", "OPTIONS"))
                await send_json(send, 200, {"data": {"status": "ok"}})
                return
            if method == "OPTIONS":
                await send_empty(send, 204, PREFLIGHT_HEADERS)
                return
            raise PageNotFoundError()
        allowed = METHODS[kind]
        if method == "OPTIONS":
            await send_empty(send, 204, [*PREFLIGHT_HEADERS, (b"allow", ", ".join(allowed).encode())])
            return
        if method not in allowed:
            raise MethodNotAllowedError((*allowed, "OPTIONS"))
        svc = self.services
        who = await svc.auth.authenticate(req.token())
        self._limit(req, who)
        seg = req.segments
        if kind == RECORD:
            if method in ("GET", "HEAD"):
                await records.get_record(req, send, svc, who, seg[2], seg[4])
            elif method == "DELETE":
                await records.delete_record(req, send, svc, who, seg[2], seg[4])
            else:
                await records.put_record(req, send, svc, who, seg[2], seg[4])
        elif kind == KEYS:
            await records.list_keys(req, send, svc, who, seg[2])
        elif kind == ZIP:
            await records.download_records(req, send, svc, who, seg[2])
        elif kind == STORE:
            if method == "GET":
                await stores.get_store(req, send, svc, who, seg[2])
            elif method == "PUT":
                await stores.update_store(req, send, svc, who, seg[2])
            else:
                await stores.delete_store(req, send, svc, who, seg[2])
        elif kind == COLLECTION:
            if method == "GET":
                await stores.list_stores(req, send, svc, who)
            else:
                await stores.create_store(req, send, svc, who)
        elif kind == GRANTS:
            await sharing.list_grants(req, send, svc, who, seg[2])
        elif kind == GRANT:
            if method == "PUT":
                await sharing.put_grant(req, send, svc, who, seg[2], seg[4])
            else:
                await sharing.delete_grant(req, send, svc, who, seg[2], seg[4])
        elif method == "GET":
            await sharing.get_me(req, send, svc, who)
        else:
            await sharing.update_me(req, send, svc, who)


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> KvboxApp:
    """Build the ASGI app. Tests pass their own services; servers build them from settings."""
    if services is None:
        services = build_services(settings or Settings.from_env())
    return KvboxApp(services)


def app_from_env() -> KvboxApp:
    """Factory for server worker processes: settings come from KVBOX_* variables."""
    return create_app(Settings.from_env())
