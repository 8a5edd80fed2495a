"""The composition root: services from settings, the API and the console side by side,
the lifespan and the background work of one server process.

Granian loads `kvbox.server:app_from_env` in each worker process (see `kvbox serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kvbox.api.app import ApiApp, owns
from kvbox.api.envelopes import store_view
from kvbox.api.http import Receive, Scope, Send
from kvbox.api.logs import AccessLog, configure_logging
from kvbox.api.middleware import CONSOLE, UNMATCHED, Observer
from kvbox.api.proxies import TrustedProxies
from kvbox.core.models import Permission, Store, User
from kvbox.service.container import Services, build_services
from kvbox.service.dispatcher import StoreRenderer
from kvbox.service.settings import Settings

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# How often each worker writes its metrics for the scrapes other workers answer.
METRICS_PUBLISH_S = 1.0
# Container allocations (net) between two collections of the youngest generation. Python's
# default, 700, is less than what 64 requests in flight hold at once: under load it collected
# every few requests, each time walking the state of every request in flight.
GC_YOUNG_THRESHOLD = 10_000
log = logging.getLogger("kvbox.server")


class KvboxApp:
    """One process's ASGI app: `/v2`, `/health` and `/metrics` go to the API, every other path
    to the console. The console is built on first use, so API-only servers never load it.
    Every request passes the observer (request id, trusted proxies, metrics, access log)."""

    def __init__(self, services: Services, *, observer: Observer | None = None, settle_heap: bool = False) -> None:
        self.services = services
        self._settle_heap = settle_heap
        self.api = ApiApp(services)
        self.observer = observer if observer is not None else observer_for(services)
        self._console: ASGIApp | None = None
        self._background: list[asyncio.Task[None]] = []
        services.dispatcher.render = webhook_resource(services)

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
            if owns(scope):
                return self.observer(self.api, scope, receive, send, UNMATCHED)
            return self.observer(self.console, scope, receive, send, CONSOLE)
        if kind == "lifespan":
            return self._lifespan(receive, send)
        return _ignored()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_background()
                if self._settle_heap:
                    settle_heap()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def start_background(self) -> None:
        """Start the process's housekeeping (counters, retention, reclaiming space) and the
        publishing of its metrics for the other workers."""
        if not self._background:
            loop = asyncio.get_running_loop()
            self._background.append(loop.create_task(self.services.housekeeper.run()))
            if self.services.settings.changes:
                self._background.append(loop.create_task(self.services.dispatcher.run()))
            if self.services.metrics.directory is not None:
                self._background.append(loop.create_task(self._publish_metrics()))

    async def _publish_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_PUBLISH_S)
            try:
                self.services.metrics.publish()
            except OSError:
                log.exception("could not publish this worker's metrics; retrying")

    async def aclose(self) -> None:
        """Stop the background work, flush counters and logs, and close the backends."""
        for task in self._background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._background = []
        with contextlib.suppress(OSError):
            self.services.metrics.publish()  # the counts of this worker's last second
        self.observer.flush()
        await self.services.close()


def webhook_resource(services: Services) -> StoreRenderer:
    """The store object a webhook delivery carries: as its API shows it to a reader."""

    def render(store: Store, owner: User | None) -> dict[str, Any]:
        settings = services.settings
        return store_view(store, owner=owner, permission=Permission.READ, base_url=settings.base_url,
                          now_ms=services.clock.now_ms(), expires_at=services.retention.expires_at(store))  # fmt: skip

    return render


def settle_heap() -> None:
    """Tune the garbage collector of a worker process that has just started.

    What start-up made (modules, routes, services, caches) lives as long as the process: it is
    frozen out of the collector's walks, which otherwise visit it on every full collection.
    The youngest generation is collected after GC_YOUNG_THRESHOLD allocations rather than 700.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


async def _ignored() -> None:
    """Scope types kvbox does not serve (websocket): nothing is accepted."""


def observer_for(services: Services) -> Observer:
    """What wraps each request, as the settings ask: metrics, access log, trusted proxies."""
    settings = services.settings
    return Observer(
        metrics=services.metrics if services.metrics.enabled else None,
        access_log=AccessLog(settings.log_format) if settings.access_log else None,
        proxies=TrustedProxies(settings.trusted_proxies) if settings.trusted_proxies else None,
    )


def create_app(
    settings: Settings | None = None, *, services: Services | None = None, settle_heap: bool = False
) -> KvboxApp:
    """Build the app. Tests pass their own services; servers build them from settings, and
    their workers settle their heap once started (see `settle_heap`)."""
    if services is None:
        services = build_services(settings or Settings.from_env())
    return KvboxApp(services, settle_heap=settle_heap)


def app_from_env() -> KvboxApp:
    """Factory for server worker processes: settings come from KVBOX_* variables. The worker
    settles its heap once started (see `settle_heap`)."""
    settings = Settings.from_env()
    configure_logging(settings.log_format)
    return create_app(settings, settle_heap=True)
