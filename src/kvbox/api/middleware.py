"""What wraps every request of a server process, API and console alike: the request id,
trusted proxies' forwarding headers, metrics and the access log.

`X-Request-Id` is the caller's when it matches `[A-Za-z0-9._-]{1,128}`, otherwise a new one;
every response carries it, and so do the request's access log line and any error logged
while serving it. The route a request is counted under is its route table pattern (set in
the scope by the API, by Starlette for the console), never the raw path.

A request is counted and logged together with others, rather than on its own path: a
request only leaves its figures in a list, and the list is counted and logged once it holds
`RECORD_AFTER` requests, or `RECORD_AFTER_S` after its first. Served through granian,
counting and logging on each request's path cost a worker about 10% of its GET rate, and
so did batches of one loop turn (a request or two under load); batches of 64 cost less,
and batches of 16 or 256 no less (`docs/performance.md`). Batches of 50 ms were tried too:
a worker sharing the cores with granian's threads lost more, as a long batch holds the
interpreter's lock that those threads wait for. A metrics snapshot counts the waiting requests first, so a
scrape misses none; log lines carry the time each request ended.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Awaitable, Callable
from time import perf_counter

from kvbox.api.http import Message, Receive, Scope, Send
from kvbox.api.later import Later
from kvbox.api.logs import REQUEST_ID, AccessLog, Answered, who_of
from kvbox.api.proxies import TrustedProxies
from kvbox.service.metrics import Metrics

ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTE_KEY = "kvbox.route"
"""Scope key under which the API leaves the matched route's pattern."""
UNMATCHED = "unmatched"
CONSOLE = "console"

_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
# Answered requests are counted and logged together: this many, or those of this long.
RECORD_AFTER = 64
RECORD_AFTER_S = 0.005
_WITH_BODY = frozenset({"PUT", "POST", "PATCH"})


class Observer:
    """Serves one request through an app, with its id, metrics and access log line."""

    def __init__(
        self,
        *,
        metrics: Metrics | None = None,
        access_log: AccessLog | None = None,
        proxies: TrustedProxies | None = None,
    ) -> None:
        self._metrics = metrics
        self._log = access_log
        self._proxies = proxies
        # New ids: a random per-process prefix and a counter, unique without a syscall per request.
        self._prefix = secrets.token_hex(6) + "-"
        self._counter = itertools.count(1)
        self._records = metrics is not None or access_log is not None
        self._answered: list[Answered] = []
        self._record_later = Later(self.record, RECORD_AFTER_S)
        if metrics is not None:
            metrics.settle_with(self.record)  # a scrape sees every request answered before it

    def flush(self) -> None:
        """Count and log every request answered so far, and write the access log lines not yet
        written (at shutdown)."""
        self.record()
        if self._log is not None:
            self._log.flush()

    def record(self) -> None:
        """Count and log the requests answered since the last call."""
        answered, self._answered = self._answered, []
        if not answered:
            return
        if self._metrics is not None:
            count = self._metrics.request
            for who, _, _, status, received, sent, seconds, _ in answered:
                count(who[1], who[0], status, seconds, received, sent)
        if self._log is not None:
            self._log.requests(answered)

    def request_id(self, scope: Scope) -> str:
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given: str = value.decode("latin-1")
                if _VALID_ID.fullmatch(given):
                    return given
                break
        return self._prefix + format(next(self._counter), "x")

    async def __call__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, fallback: str) -> None:
        """Serve `scope` through `app`; `fallback` is the route label when no route matched."""
        start = perf_counter()
        request_id = self.request_id(scope)
        REQUEST_ID.set(request_id)
        if self._proxies is not None:
            self._proxies.apply(scope)
        id_header = (b"x-request-id", request_id.encode())
        status = 0
        sent = 0
        received = 0

        def send_observed(message: Message) -> Awaitable[None]:
            # Hands back the server's own awaitable: no coroutine of ours per message.
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message["headers"], id_header]
            else:
                sent += len(message.get("body", b""))
            return send(message)

        observed_receive = receive
        if scope["method"] in _WITH_BODY:

            async def receive_counted() -> Message:
                nonlocal received
                message = await receive()
                received += len(message.get("body", b""))
                return message

            observed_receive = receive_counted
        try:
            await app(scope, observed_receive, send_observed)
        finally:
            route = scope.get(ROUTE_KEY) or _starlette_route(scope) or fallback
            ended = perf_counter()
            # A response never started is answered 500 by the server.
            status = status or 500
            if self._records:
                answered = self._answered
                who = who_of(scope, route)
                answered.append((who, scope["path"], request_id, status, received, sent, ended - start, ended))
                if len(answered) >= RECORD_AFTER:
                    self.record()
                else:  # on every request: a batch left by a closed loop is then taken up by this one
                    self._record_later.ask()


def _starlette_route(scope: Scope) -> str | None:
    """The console's route pattern, which Starlette leaves in the scope."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else None
