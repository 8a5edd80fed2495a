"""Signing in and out, the session cookie, redirects and CSRF protection (in-process)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import ALICE_TOKEN, BOB_TOKEN
from console.conftest import Console
from kvbox.core.clock import FakeClock
from kvbox.service.settings import Settings

pytestmark = pytest.mark.anyio


def cookie_header(response: httpx.Response, name: str) -> str:
    for value in response.headers.get_list("set-cookie"):
        if value.startswith(name + "="):
            return value
    raise AssertionError(f"no {name} cookie in {response.headers.get_list('set-cookie')}")


async def test_pages_redirect_to_sign_in_with_the_page_to_come_back_to(console: Console) -> None:
    r = await console.get("/")
    assert r.status_code == 303 and r.headers["location"] == "/stores"
    for path in ("/stores", "/stores?unnamed=1", "/account", "/stores/abc/settings"):
        r = await console.get(path)
        assert r.status_code == 303, path
        assert r.headers["location"].startswith("/sign-in?next=/"), r.headers["location"]
    r = await console.sign_in(next_url="/stores?unnamed=1")
    assert r.status_code == 303 and r.headers["location"] == "/stores?unnamed=1"


async def test_session_cookie_is_httponly_samesite_and_expiring(console: Console) -> None:
    r = await console.sign_in()
    assert r.status_code == 303
    cookie = cookie_header(r, "kvbox_session").lower()
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "max-age=43200" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # plain http on this test server
    assert ALICE_TOKEN not in cookie  # the token itself never goes into the cookie
    page = await console.get("/stores")
    assert page.status_code == 200 and "alice" in page.text


async def test_cookie_is_secure_behind_https(tmp_path: Path) -> None:
    from kvbox.server import create_app
    from kvbox.service.container import build_services

    settings = Settings(backend="memory", data_dir=tmp_path / "d", public_url="https://kv.example", rate_limits=False)
    svc = build_services(settings)
    await svc.users.create_user("carol", token="carol-token-0123456789")
    app = create_app(services=svc)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://kv.example") as client:
        c = Console(client=client, services=svc)
        r = await c.sign_in("carol-token-0123456789")
        assert "secure" in cookie_header(r, "kvbox_session").lower()
    await svc.close()


async def test_wrong_token_is_refused_without_a_session(console: Console) -> None:
    r = await console.sign_in("not-a-real-token-000000")
    assert r.status_code == 401
    assert "not valid" in r.text
    assert not any(c.startswith("kvbox_session=") for c in r.headers.get_list("set-cookie"))
    assert (await console.get("/stores")).status_code == 303


async def test_sign_in_form_needs_its_own_csrf_token(console: Console) -> None:
    await console.get("/sign-in")
    r = await console.client.post("/sign-in", data={"token": ALICE_TOKEN, "login_token": "forged"})
    assert r.status_code == 403
    assert not any(c.startswith("kvbox_session=") for c in r.headers.get_list("set-cookie"))


async def test_sign_in_never_redirects_off_site(console: Console) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        console.client.cookies.clear()
        r = await console.sign_in(next_url=target)
        assert r.headers["location"] == "/stores", target


async def test_sign_out_ends_the_session(console: Console) -> None:
    await console.sign_in()
    r = await console.post("/sign-out")
    assert r.status_code == 303 and r.headers["location"] == "/sign-in"
    assert "max-age=0" in cookie_header(r, "kvbox_session").lower()
    assert (await console.get("/stores")).status_code == 303


async def test_session_expires(console: Console, clock: FakeClock) -> None:
    await console.sign_in()
    clock.advance(seconds=11 * 3600)
    assert (await console.get("/stores")).status_code == 200
    clock.advance(seconds=3600 + 1)
    r = await console.get("/stores")
    assert r.status_code == 303 and r.headers["location"].startswith("/sign-in")


async def test_revoking_the_token_ends_its_sessions(console: Console) -> None:
    await console.sign_in()
    assert await console.services.users.revoke_token(ALICE_TOKEN)
    assert (await console.get("/stores")).status_code == 303


async def test_a_tampered_cookie_is_not_a_session(console: Console) -> None:
    await console.sign_in()
    value = console.client.cookies.get("kvbox_session")
    assert value
    payload, mac = value.split(".")
    console.client.cookies.set("kvbox_session", payload[:-2] + "AA." + mac, domain="kvbox.test")
    assert (await console.get("/stores")).status_code == 303


async def test_forms_without_the_csrf_token_are_refused(console: Console) -> None:
    await console.sign_in()
    for token in ("", "wrong"):
        r = await console.post("/stores", {"name": "csrf-victim"}, csrf=token)
        assert r.status_code == 403, token
        assert "did not come from the console" in r.text
    r = await console.client.post("/stores", data={"name": "csrf-victim"})  # no token field at all
    assert r.status_code == 403
    r = await console.client.post(
        "/stores", content=b'{"name": "csrf-victim"}', headers={"content-type": "application/json"}
    )
    assert r.status_code == 403
    listing = await console.get("/stores")
    assert "csrf-victim" not in listing.text


async def test_a_csrf_token_from_another_session_is_refused(console: Console, other: Console) -> None:
    await console.sign_in(ALICE_TOKEN)
    await other.sign_in(BOB_TOKEN)
    r = await console.post("/stores", {"name": "crossed"}, csrf=other.csrf)
    assert r.status_code == 403
    # A new sign-in of the same user gets a new token; the old one stops working.
    old = console.csrf
    await console.sign_in(ALICE_TOKEN)
    assert console.csrf != old
    assert (await console.post("/stores", {"name": "stale"}, csrf=old)).status_code == 403


async def test_cross_site_requests_are_refused_even_with_a_token(console: Console) -> None:
    await console.sign_in()
    cases = [
        {"origin": "https://evil.example"},
        {"origin": "null"},  # a sandboxed frame, e.g. an uploaded HTML record
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
    ]
    for headers in cases:
        r = await console.post("/stores", {"name": "cross-site"}, headers=headers)
        assert r.status_code == 403, headers
    ok = await console.post(
        "/stores", {"name": "same-site"}, headers={"origin": "http://kvbox.test", "sec-fetch-site": "same-origin"}
    )
    assert ok.status_code == 303


async def test_uploads_need_the_csrf_header(console: Console) -> None:
    await console.sign_in()
    store = (await console.post("/stores", {"name": "uploads"})).headers["location"].rsplit("/", 1)[-1]
    r = await console.upload(store, "a", b"x", "text/plain", csrf="")
    assert r.status_code == 403
    r = await console.upload(store, "a", b"x", "text/plain", csrf="forged")
    assert r.status_code == 403
    r = await console.upload(store, "a", b"x", "text/plain")
    assert r.status_code == 201
    # Signed out, an upload is told to sign in rather than redirected.
    console.client.cookies.clear()
    r = await console.upload(store, "b", b"x", "text/plain")
    assert r.status_code == 401


async def test_pages_carry_security_headers(console: Console) -> None:
    for path in ("/sign-in", "/stores"):
        if path == "/stores":
            await console.sign_in()
        r = await console.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"


async def test_api_routes_are_untouched(console: Console) -> None:
    r = await console.get("/v2/nope")
    assert r.status_code == 404 and r.json()["error"]["type"] == "page-not-found"
    r = await console.get("/v2")
    assert r.status_code == 404 and r.json()["error"]["type"] == "page-not-found"
    assert (await console.get("/health")).json() == {"data": {"status": "ok"}}
    # The console's session is not an API credential.
    await console.sign_in()
    r = await console.get("/v2/key-value-stores")
    assert r.status_code == 401


async def test_unknown_console_pages_are_html_404s(console: Console) -> None:
    await console.sign_in()
    r = await console.get("/no/such/page")
    assert r.status_code == 404 and "text/html" in r.headers["content-type"]
    r = await console.get("/static/nope.js")
    assert r.status_code == 404
    css = await console.get("/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
