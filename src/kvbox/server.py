"""The composition root: services from settings, the API and the console side by side,
the lifespan and the background work of one server process.

Granian loads `kvbox.server:app_from_env` in each worker process (see `kvbox serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from kvbox.api.app import ApiApp, owns
from kvbox.api.http import Receive, Scope, Send
from kvbox.service.container import Services, build_services
from kvbox.service.settings import Settings

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class KvboxApp:
    """One process's ASGI app: `/v2` and `/health` go to the API, every other path to the
    console. The console is built on first use, so API-only servers never load it."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.api = ApiApp(services)
        self._console: ASGIApp | None = None
        self._background: asyncio.Task[None] | None = None

    @property
    def console(self) -> ASGIApp:
        if self._console is None:
            from kvbox.console import create_console

            self._console = create_console(self.services)
        return self._console

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # Hands back the chosen app's coroutine instead of awaiting it in one more frame:
        # the server awaits it directly, and the record path pays for no extra hop.
        kind = scope["type"]
        if kind == "http":
            app = self.api if owns(scope) else self.console
            return app(scope, receive, send)
        if kind == "lifespan":
            return self._lifespan(receive, send)
        return _ignored()

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
        """Start the process's housekeeping (counters, retention, reclaiming space)."""
        if self._background is None:
            self._background = asyncio.get_running_loop().create_task(self.services.housekeeper.run())

    async def aclose(self) -> None:
        """Stop the background work, flush counters and close the backends."""
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._background
            self._background = None
        await self.services.close()


async def _ignored() -> None:
    """Scope types kvbox does not serve (websocket): nothing is accepted."""


def create_app(settings: Settings | None = None, *, services: Services | None = None) -> KvboxApp:
    """Build the app. Tests pass their own services; servers build them from settings."""
    if services is None:
        services = build_services(settings or Settings.from_env())
    return KvboxApp(services)


def app_from_env() -> KvboxApp:
    """Factory for server worker processes: settings come from KVBOX_* variables."""
    return create_app(Settings.from_env())
