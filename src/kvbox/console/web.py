"""Request plumbing shared by the console's views: who is calling, CSRF checks, forms,
flash messages, rendering and error pages."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from kvbox.console import present
from kvbox.console.session import SESSION_COOKIE, Session, SessionSigner, load_secret, principal_for
from kvbox.core.errors import (
    InsufficientPermissionsError,
    KvboxError,
    RecordNotFoundError,
    StoreNotFoundError,
    TokenNotProvidedError,
)
from kvbox.core.models import GeneralAccess, Permission
from kvbox.service.container import Services
from kvbox.service.principal import Principal

log = logging.getLogger("kvbox.console")

HERE = Path(__file__).resolve().parent
SAFE_METHODS = ("GET", "HEAD")
FORM_LIMIT = 64 * 1024
FLASH_COOKIE = "kvbox_flash"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True, slots=True)
class Caller:
    """The signed-in user of one request, and what a form needs to post back."""

    session: Session
    principal: Principal
    csrf: str

    @property
    def username(self) -> str:
        return self.principal.user.username if self.principal.user else ""


class Console:
    """What every view shares: the services, the templates, the signing key and the static files."""

    def __init__(self, services: Services, *, secret: bytes | None = None) -> None:
        self.services = services
        self._secret = secret
        self._signer: SessionSigner | None = None
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.static = {name: (HERE / "static" / name).read_bytes() for name in ("console.css", "console.js")}
        versions = {name: hashlib.sha256(data).hexdigest()[:12] for name, data in self.static.items()}
        self.templates.globals.update(
            static=lambda name: f"/static/{name}?v={versions[name]}",
            store_url=present.store_url,
            record_url=present.record_url,
            with_query=present.with_query,
            Permission=Permission,
            access_label=lambda value: present.ACCESS_LABELS[GeneralAccess(value)],
        )
        self.templates.filters.update(
            size=present.size, number=present.number, when=present.when, duration=present.duration
        )

    @property
    def signer(self) -> SessionSigner:
        # Read (or created) on first use, so an API-only process never touches the file.
        if self._signer is None:
            self._signer = SessionSigner(self._secret or load_secret(self.services.settings.data_dir))
        return self._signer

    def now_ms(self) -> int:
        return self.services.clock.now_ms()

    async def caller(self, request: Request) -> Caller | None:
        session = self.signer.load(request.cookies.get(SESSION_COOKIE), now_ms=self.now_ms())
        if session is None:
            return None
        principal = await principal_for(self.services, session)
        if principal is None:
            return None
        return Caller(session=session, principal=principal, csrf=self.signer.csrf_token(session))

    # responses

    def render(
        self, request: Request, template: str, caller: Caller | None, *, status: int = 200, **context: Any
    ) -> HTMLResponse:
        flash = read_flash(request, self.signer)
        html = self.templates.get_template(template).render(
            request=request, viewer=caller, flash=flash, retention=self.services.retention.retention_ms, **context
        )
        response = HTMLResponse(html, status_code=status, headers={"cache-control": "no-store"})
        if flash is not None:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return response

    def redirect(self, url: str, *, flash: tuple[str, str] | None = None) -> RedirectResponse:
        response = RedirectResponse(url, status_code=303)
        if flash is not None:
            set_flash(response, self.signer, *flash)
        return response

    def error_page(self, request: Request, caller: Caller | None, status: int, title: str, message: str) -> Response:
        if wants_json(request):
            return JSONResponse({"error": {"message": message}}, status_code=status)
        return self.render(request, "error.html", caller, status=status, title=title, message=message)

    def failure(self, request: Request, caller: Caller | None, exc: KvboxError) -> Response:
        """An error from a service call as a page. A store the caller may not see is reported
        exactly like one that does not exist, so a URL never reveals another user's store."""
        if isinstance(exc, InsufficientPermissionsError) and request.method not in SAFE_METHODS:
            return self.error_page(request, caller, 403, "Not allowed", exc.message)
        if isinstance(exc, StoreNotFoundError | InsufficientPermissionsError):
            return self.error_page(
                request, caller, 404, "Store not found",
                "This key-value store does not exist, or you do not have access to it.",
            )  # fmt: skip
        if isinstance(exc, RecordNotFoundError):
            return self.error_page(request, caller, 404, "Record not found", "This record does not exist.")
        if exc.status >= 500:
            log.error("console request failed: %s", exc, exc_info=exc)
        return self.error_page(request, caller, exc.status, "Something went wrong", exc.message)


Handler = Callable[[Console, Request, Caller], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def signed_in(console: Console, handler: Handler) -> Endpoint:
    """Wrap a view: sign-in required (pages redirect to the sign-in form), and every request
    that can change something must come from this origin and carry the session's CSRF token."""

    async def endpoint(request: Request) -> Response:
        caller = await console.caller(request)
        if caller is None:
            if request.method in SAFE_METHODS:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/sign-in?next=" + quote(target, safe="/"), status_code=303)
            if wants_json(request):
                return JSONResponse({"error": {"message": "Sign in first."}}, status_code=401)
            return RedirectResponse("/sign-in", status_code=303)
        if request.method not in SAFE_METHODS:
            presented = request.headers.get(CSRF_HEADER)
            if is_form(request):
                request.state.form = await read_form(request)
                presented = presented or request.state.form.get(CSRF_FIELD)
            if not same_origin(request, console.services.settings.base_url) or not console.signer.check_csrf(
                caller.session, presented
            ):
                return console.error_page(
                    request, caller, 403, "Request refused",
                    "This form has expired or did not come from the console. Go back, reload the page and try again.",
                )  # fmt: skip
        try:
            return await handler(console, request, caller)
        except TokenNotProvidedError:
            return RedirectResponse("/sign-in", status_code=303)
        except KvboxError as exc:
            return console.failure(request, caller, exc)

    return endpoint


def form_of(request: Request) -> dict[str, str]:
    """The urlencoded form of a POST that `signed_in` has already read and checked."""
    form: dict[str, str] = getattr(request.state, "form", {})
    return form


def is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").split(";")[0].strip() == "application/x-www-form-urlencoded"


async def read_form(request: Request) -> dict[str, str]:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_LIMIT:
            return {}
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "") or request.method == "PUT"


def same_origin(request: Request, base_url: str) -> bool:
    """False for requests that a browser says came from another site (or from a sandboxed frame,
    whose origin is "null")."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host or origin.rstrip("/") == base_url.rstrip("/")


def safe_next(value: str | None) -> str:
    """Only local paths may be a redirect target after sign-in."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/stores"
    return value


# Flash messages survive one redirect in a signed cookie (so nobody can plant a message).


def set_flash(response: Response, signer: SessionSigner, kind: str, text: str) -> None:
    payload = base64.urlsafe_b64encode(json.dumps([kind, text[:500]]).encode()).decode()
    response.set_cookie(
        FLASH_COOKIE, f"{payload}.{signer.sign('flash', payload)}", max_age=60, path="/", httponly=True,
        samesite="lax",
    )  # fmt: skip


def read_flash(request: Request, signer: SessionSigner) -> tuple[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or raw.count(".") != 1:
        return None
    payload, mac = raw.split(".")
    if not signer.verify("flash", payload, mac):
        return None
    try:
        kind, text = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error, TypeError):
        return None
    return str(kind), str(text)
