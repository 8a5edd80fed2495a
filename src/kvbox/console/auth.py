"""Signing in with an API token, signing out, and the account page."""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from kvbox.console.session import LOGIN_COOKIE, LOGIN_TTL_S, SESSION_COOKIE, SESSION_TTL_MS
from kvbox.console.web import Caller, Console, form_of, read_form, safe_next, same_origin
from kvbox.core.errors import InvalidTokenError, KvboxError
from kvbox.service.sharing import USER_DEFAULTS


def _secure(console: Console, request: Request) -> bool:
    return request.url.scheme == "https" or console.services.settings.base_url.startswith("https:")


def _sign_in_page(console: Console, request: Request, *, nonce: str, status: int = 200, error: str | None = None,
                  next_url: str = "/stores") -> Response:  # fmt: skip
    response = console.render(
        request, "sign_in.html", None, status=status, error=error, next_url=next_url,
        login_token=console.signer.login_token(nonce),
    )  # fmt: skip
    response.set_cookie(
        LOGIN_COOKIE, nonce, max_age=LOGIN_TTL_S, path="/sign-in", httponly=True, samesite="strict",
        secure=_secure(console, request),
    )  # fmt: skip
    return response


async def sign_in_form(request: Request) -> Response:
    console: Console = request.app.state.console
    next_url = safe_next(request.query_params.get("next"))
    if await console.caller(request) is not None:
        return RedirectResponse(next_url, status_code=303)
    nonce = request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(16)
    return _sign_in_page(console, request, nonce=nonce, next_url=next_url)


async def sign_in(request: Request) -> Response:
    """Check the token exactly as the API does, then start a session bound to that token."""
    console: Console = request.app.state.console
    form = await read_form(request)
    next_url = safe_next(form.get("next"))
    nonce = request.cookies.get(LOGIN_COOKIE)
    fresh = secrets.token_urlsafe(16)
    if not same_origin(request, console.services.settings.base_url) or not console.signer.check_login(
        nonce, form.get("login_token")
    ):
        return _sign_in_page(
            console, request, nonce=fresh, status=403, next_url=next_url,
            error="The sign-in form expired. Please enter your token again.",
        )  # fmt: skip
    token = form.get("token", "").strip()
    try:
        principal = await console.services.auth.authenticate(token or "")
    except InvalidTokenError:
        principal = None
    except KvboxError as exc:
        return _sign_in_page(console, request, nonce=fresh, status=400, next_url=next_url, error=exc.message)
    if principal is None or principal.user is None or principal.token is None:
        return _sign_in_page(
            console, request, nonce=fresh, status=401, next_url=next_url,
            error="That API token is not valid. Check it and try again.",
        )  # fmt: skip
    _, cookie = console.signer.issue(principal.user.id, principal.token.id, now_ms=console.now_ms())
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        SESSION_COOKIE, cookie, max_age=SESSION_TTL_MS // 1000, path="/", httponly=True, samesite="lax",
        secure=_secure(console, request),
    )  # fmt: skip
    response.delete_cookie(LOGIN_COOKIE, path="/sign-in")
    return response


async def sign_out(console: Console, request: Request, caller: Caller) -> Response:
    response = console.redirect("/sign-in", flash=("ok", "You are signed out."))
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


async def home(request: Request) -> Response:
    return RedirectResponse("/stores", status_code=303)


async def account(console: Console, request: Request, caller: Caller) -> Response:
    user = caller.principal.user
    token = caller.principal.token
    return console.render(
        request, "account.html", caller, user=user, token=token, choices=[a.value for a in USER_DEFAULTS],
    )  # fmt: skip


async def update_account(console: Console, request: Request, caller: Caller) -> Response:
    value = form_of(request).get("default_general_access")
    try:
        await console.services.sharing.set_default_access(caller.principal, value)
    except KvboxError as exc:
        return console.redirect("/account", flash=("error", exc.message))
    return console.redirect("/account", flash=("ok", "Default general access saved."))
