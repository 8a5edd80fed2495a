"""The ASGI application: routing, CORS preflight, health, lifespan.

Routing is a direct match on path segments: the record GET/PUT path carries no framework.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kvbox.api import records, stores
from kvbox.api.errors import send_error
from kvbox.api.http import Receive, Request, Scope, Send, send_empty, send_json
from kvbox.core.errors import MethodNotAllowedError, PageNotFoundError
from kvbox.service.container import Services, build_services
from kvbox.service.settings import Settings

log = logging.getLogger("kvbox.api")

COLLECTION_METHODS = ("GET", "POST")
STORE_METHODS = ("GET", "PUT", "DELETE")
LIST_METHODS = ("GET",)
RECORD_METHODS = ("GET", "HEAD", "PUT", "POST", "DELETE")
PREFLIGHT_HEADERS = [
    (b"access-control-allow-methods", b"GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    (b"access-control-allow-headers", b"Authorization, Content-Type, Content-Encoding, If-None-Match"),
    (b"access-control-max-age", b"86400"),
]


class KvboxApp:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._background: asyncio.Task[None] | None = None

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
        try:
            await self._route(req, send)
        except Exception as exc:  # every failure leaves as an error envelope
            await send_error(send, exc, head=req.method == "HEAD")

    async def _route(self, req: Request, send: Send) -> None:
        seg = req.segments
        n = len(seg)
        method = req.method
        if n >= 2 and seg[0] == "v2" and seg[1] == "key-value-stores":
            if n == 2:
                allowed = COLLECTION_METHODS
            elif n == 3:
                allowed = STORE_METHODS
            elif n == 4 and seg[3] in ("keys", "records"):
                allowed = LIST_METHODS
            elif n == 5 and seg[3] == "records":
                allowed = RECORD_METHODS
            else:
                raise PageNotFoundError()
            if method == "OPTIONS":
                await send_empty(send, 204, [*PREFLIGHT_HEADERS, (b"allow", ", ".join(allowed).encode())])
                return
            if method not in allowed:
                raise MethodNotAllowedError((*allowed, "OPTIONS"))
            svc = self.services
            who = await svc.auth.authenticate(req.token())
            if n == 5:
                if method in ("GET", "HEAD"):
                    await records.get_record(req, send, svc, who, seg[2], seg[4])
                elif method == "DELETE":
                    await records.delete_record(req, send, svc, who, seg[2], seg[4])
                else:
                    await records.put_record(req, send, svc, who, seg[2], seg[4])
            elif n == 4:
                if seg[3] == "keys":
                    await records.list_keys(req, send, svc, who, seg[2])
                else:
                    await records.download_records(req, send, svc, who, seg[2])
            elif n == 3:
                if method == "GET":
                    await stores.get_store(req, send, svc, who, seg[2])
                elif method == "PUT":
                    await stores.update_store(req, send, svc, who, seg[2])
                else:
                    await stores.delete_store(req, send, svc, who, seg[2])
            elif method == "GET":
                await stores.list_stores(req, send, svc, who)
            else:
                await stores.create_store(req, send, svc, who)
            return
        if n == 1 and seg[0] == "health":
            if method not in ("GET", "HEAD"):
                raise MethodNotAllowedError(("GET", "HEAD"))
            await send_json(send, 200, {"data": {"status": "ok"}})
            return
        if method == "OPTIONS":
            await send_empty(send, 204, PREFLIGHT_HEADERS)
            return
        raise PageNotFoundError()


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> KvboxApp:
    """Build the ASGI app. Tests pass their own services; servers build them from settings."""
    if services is None:
        services = build_services(settings or Settings.from_env())
    return KvboxApp(services)


def app_from_env() -> KvboxApp:
    """Factory for server worker processes: settings come from KVBOX_* variables."""
    return create_app(Settings.from_env())
