"""The route table: every endpoint of the API is one row.

A row names a path pattern (`{name}` segments are parameters, passed to the handler in
order), the handler of each method, the rate-limit bucket the route draws from (its
`X-RateLimit-Limit`), and whether the caller is authenticated first. Every route that
answers GET answers HEAD too (RFC 9110), through its GET handler unless it names its own. Matching is a
lookup by segment count and a comparison of the literal segments: no framework sits on
the record path.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from operator import itemgetter
from typing import Any

from kvbox.api import changes, health, metrics, openapi, records, sharing, stores, webhooks
from kvbox.api.http import Message, Request, Send

Handler = Callable[..., Awaitable[None]]
"""`handler(req, send, services, principal, *path_params)`."""


class Bucket(Enum):
    """Which rate limit a route advertises: per user, per store, or per store for records."""

    USER = "user"
    STORE = "store"
    RECORDS = "records"


@dataclass(frozen=True, slots=True)
class Route:
    path: str
    handlers: Mapping[str, Handler]
    bucket: Bucket
    authenticate: bool = True
    # Methods whose handlers confirm the caller in the same round trip as their work, so the
    # app may hand them a claimed principal (Authenticator.claim).
    confirming: frozenset[str] = frozenset()
    # Derived from `path`: the literal segments to compare and where the parameters are.
    size: int = field(init=False)
    literals: Callable[[list[str]], Any] = field(init=False, repr=False)
    expected: Any = field(init=False, repr=False)
    arguments: Callable[[list[str]], tuple[str, ...]] = field(init=False, repr=False)
    allowed: tuple[str, ...] = field(init=False)
    store_at: int | None = field(init=False)  # the segment naming the store, if any

    def __post_init__(self) -> None:
        parts = self.path.strip("/").split("/")
        fixed = [(i, p) for i, p in enumerate(parts) if not p.startswith("{")]
        set_ = object.__setattr__
        if "GET" in self.handlers and "HEAD" not in self.handlers:
            set_(self, "handlers", {**self.handlers, "HEAD": head_of(self.handlers["GET"])})
        set_(self, "size", len(parts))
        # itemgetter of one index returns the item, of several a tuple: `expected` matches that shape.
        set_(self, "literals", itemgetter(*(i for i, _ in fixed)))
        set_(self, "expected", fixed[0][1] if len(fixed) == 1 else tuple(p for _, p in fixed))
        set_(self, "arguments", _getter(tuple(i for i, p in enumerate(parts) if p.startswith("{"))))
        set_(self, "allowed", tuple(self.handlers))
        set_(self, "store_at", parts.index("{store}") if "{store}" in parts else None)


class _HeadDone(Exception):
    """The GET handler behind a HEAD request has sent its status and headers: stop it there."""


def head_of(get: Handler) -> Handler:
    """HEAD through a GET handler: the same status and headers (Content-Length included), no
    body, and the handler is stopped at its first body message so a long body is never made."""

    async def head(req: Request, send: Send, *args: Any) -> None:
        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                await send({"type": "http.response.body", "body": b""})
                raise _HeadDone()
            await send(message)

        with contextlib.suppress(_HeadDone):
            await get(req, headers_only, *args)

    return head


def _getter(positions: tuple[int, ...]) -> Callable[[list[str]], tuple[str, ...]]:
    """The path parameters at `positions`, as a tuple (itemgetter of one index gives the item)."""
    if not positions:
        return lambda segments: ()
    if len(positions) == 1:
        (only,) = positions
        return lambda segments: (segments[only],)
    return itemgetter(*positions)


_STORE = "/v2/key-value-stores/{store}"

ROUTES: tuple[Route, ...] = (
    Route(_STORE + "/records/{key}", {
        "GET": records.get_record,
        "HEAD": records.get_record,
        "PUT": records.put_record,
        "POST": records.put_record,
        "DELETE": records.delete_record,
    }, Bucket.RECORDS, confirming=frozenset({"GET", "HEAD", "PUT", "POST"})),
    Route(_STORE + "/keys", {"GET": records.list_keys}, Bucket.STORE),
    Route(_STORE + "/records", {"GET": records.download_records, "DELETE": records.delete_records}, Bucket.STORE),
    Route(_STORE, {"GET": stores.get_store, "PUT": stores.update_store, "DELETE": stores.delete_store}, Bucket.STORE),
    Route("/v2/key-value-stores", {"GET": stores.list_stores, "POST": stores.create_store}, Bucket.USER),
    Route(_STORE + "/grants", {"GET": sharing.list_grants}, Bucket.STORE),
    Route(_STORE + "/grants/{user}", {"PUT": sharing.put_grant, "DELETE": sharing.delete_grant}, Bucket.STORE),
    Route(_STORE + "/changes", {"GET": changes.get_changes}, Bucket.STORE),
    Route(_STORE + "/webhooks", {"GET": webhooks.list_webhooks, "POST": webhooks.create_webhook}, Bucket.STORE),
    Route(_STORE + "/webhooks/{webhook}", {
        "GET": webhooks.get_webhook,
        "PUT": webhooks.update_webhook,
        "DELETE": webhooks.delete_webhook,
    }, Bucket.STORE),
    Route(_STORE + "/webhooks/{webhook}/deliveries", {"GET": webhooks.list_deliveries}, Bucket.STORE),
    Route("/v2/users/me", {"GET": sharing.get_me, "PUT": sharing.update_me}, Bucket.USER),
    Route("/v2/openapi.json", {"GET": openapi.get_openapi}, Bucket.USER, authenticate=False),
    Route("/health", {"GET": health.health, "HEAD": health.health}, Bucket.USER, authenticate=False),
    Route("/health/ready", {"GET": health.ready, "HEAD": health.ready}, Bucket.USER, authenticate=False),
    Route("/metrics", {"GET": metrics.metrics}, Bucket.USER, authenticate=False),
)  # fmt: skip

# The first segments of every path the API owns, matched or not (unmatched ones get a JSON 404).
API_ROOTS = frozenset({"v2", "health", "metrics"})


class RouteTable:
    """The routes grouped by segment count, in table order within a group."""

    def __init__(self, routes: tuple[Route, ...] = ROUTES) -> None:
        self.routes = routes
        self._by_size: dict[int, list[tuple[Callable[[list[str]], Any], Any, Route]]] = {}
        for route in routes:
            self._by_size.setdefault(route.size, []).append((route.literals, route.expected, route))

    def match(self, segments: list[str]) -> Route | None:
        for literals, expected, route in self._by_size.get(len(segments), ()):
            if literals(segments) == expected:
                return route
        return None
