"""The console's ASGI app: routes, static files and the security headers of every page."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kvbox.console import auth, events, records, snippets, stores
from kvbox.console.web import Console, Handler, signed_in
from kvbox.service.container import Services

# Pages run only the console's own script and styles, are never framed by another site, and
# post forms only to the console. Records are shown only through sandboxed responses (see
# `records.RAW_HEADERS`), which replace this policy with their own.
PAGE_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
        b"frame-src 'self'; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
STATIC_TYPES = {"console.css": "text/css; charset=utf-8", "console.js": "text/javascript; charset=utf-8"}


class SecurityHeaders:
    """Adds `PAGE_HEADERS` to every response that does not set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in PAGE_HEADERS if name not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _static(console: Console) -> Any:
    async def endpoint(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in console.static:
            return Response("Not found", status_code=404, media_type="text/plain")
        # URLs carry a content hash (`?v=`), so a cached copy is never stale.
        cache = "public, max-age=31536000, immutable" if request.query_params.get("v") else "no-cache"
        return Response(console.static[name], media_type=STATIC_TYPES[name], headers={"cache-control": cache})

    return endpoint


def create_console(services: Services, *, secret: bytes | None = None) -> ASGIApp:
    """The console app over `services`. `secret` signs session cookies; by default it is kept
    in the data dir so that every worker process shares it."""
    cx = Console(services, secret=secret)

    def page(handler: Handler, path: str, methods: tuple[str, ...] = ("GET",)) -> Route:
        return Route(path, signed_in(cx, handler), methods=list(methods))

    s = "/stores/{store}"
    r = s + "/records/{key}"
    routes = [
        Route("/", auth.home, methods=["GET"]),
        Route("/sign-in", auth.sign_in_form, methods=["GET"]),
        Route("/sign-in", auth.sign_in, methods=["POST"]),
        Route("/static/{name}", _static(cx), methods=["GET"]),
        page(auth.sign_out, "/sign-out", ("POST",)),
        page(auth.account, "/account"),
        page(auth.update_account, "/account", ("POST",)),
        page(stores.store_list, "/stores"),
        page(stores.create_store, "/stores", ("POST",)),
        page(records.records_tab, s),
        page(stores.settings_page, s + "/settings"),
        page(snippets.api_tab, s + "/api"),
        page(events.events_tab, s + "/events"),
        page(events.events_feed, s + "/events/feed"),
        page(events.add_webhook, s + "/webhooks", ("POST",)),
        page(events.delete_webhook, s + "/webhooks/{webhook}/delete", ("POST",)),
        page(stores.rename_store, s + "/rename", ("POST",)),
        page(stores.set_access, s + "/access", ("POST",)),
        page(stores.set_expiry, s + "/expiry", ("POST",)),
        page(stores.share, s + "/grants", ("POST",)),
        page(stores.unshare, s + "/grants/{user}/delete", ("POST",)),
        page(stores.delete_store, s + "/delete", ("POST",)),
        page(records.download_zip, s + "/download.zip"),
        page(records.delete_prefix, s + "/delete-prefix", ("POST",)),
        page(records.record_page, r),
        page(records.upload_record, r, ("PUT",)),
        page(records.raw_record, r + "/raw"),
        page(records.delete_record, r + "/delete", ("POST",)),
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found(cx), 405: _not_allowed(cx)})
    app.state.console = cx
    return SecurityHeaders(app)


def _not_found(cx: Console) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        caller = await cx.caller(request)
        return cx.error_page(request, caller, 404, "Page not found", "There is no page at this address.")

    return handler


def _not_allowed(cx: Console) -> Any:
    async def handler(request: Request, exc: Exception) -> Response:
        return Response("Method not allowed", status_code=405, media_type="text/plain")

    return handler
