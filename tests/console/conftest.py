"""Console fixtures: an in-process client that signs in like a browser, and (for the browser
tests) a real `kvbox serve` with headless Debian Chromium driven by Playwright."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ADMIN_TOKEN, ALICE_TOKEN, ServerProcess, start_server
from kvbox.server import create_app
from kvbox.service.container import Services

BASE = "http://kvbox.test"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
BOB_BROWSER_TOKEN = "bob-console-token-0123456789"


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert found, "the page carries no CSRF token"
    return html.unescape(found.group(1))


@dataclass
class Console:
    """An in-process browser stand-in: keeps cookies, signs in through the form, posts forms with the CSRF token."""

    client: httpx.AsyncClient
    services: Services
    csrf: str = ""
    pages: dict[str, str] = field(default_factory=dict)

    async def sign_in(self, token: str = ALICE_TOKEN, *, next_url: str = "/stores") -> httpx.Response:
        self.client.cookies.clear()  # a fresh sign-in, as after signing out
        page = await self.client.get("/sign-in")
        login = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert login, page.text
        r = await self.client.post("/sign-in", data={"token": token, "login_token": login.group(1), "next": next_url})
        if r.status_code == 303:
            self.csrf = csrf_of((await self.client.get("/stores")).text)
        return r

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.client.get(url, **kwargs)

    async def post(self, url: str, data: dict[str, str] | None = None, *, csrf: str | None = None,
                   **kwargs: Any) -> httpx.Response:  # fmt: skip
        form = {"csrf_token": self.csrf if csrf is None else csrf, **(data or {})}
        return await self.client.post(url, data=form, **kwargs)

    async def upload(self, store_id: str, key: str, body: bytes, content_type: str, *,
                     csrf: str | None = None) -> httpx.Response:  # fmt: skip
        headers = {"content-type": content_type, "accept": "application/json"}
        token = self.csrf if csrf is None else csrf
        if token:
            headers["x-csrf-token"] = token
        return await self.client.put(f"/stores/{store_id}/records/{key}", content=body, headers=headers)


@pytest.fixture
async def console(services: Services) -> AsyncIterator[Console]:
    """The whole app (API and console) in-process, on every backend, with alice and bob."""
    app = create_app(services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield Console(client=client, services=services)


@pytest.fixture
async def other(services: Services) -> AsyncIterator[Console]:
    """A second browser on the same app (for bob)."""
    app = create_app(services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        yield Console(client=client, services=services)


# Browser tests


@dataclass
class LiveServer:
    server: ServerProcess
    admin_token: str
    bob_token: str

    @property
    def url(self) -> str:
        return self.server.url

    def api(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {token or self.admin_token}"}, timeout=15
        )


@pytest.fixture(scope="session")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real `kvbox serve` with two workers (a session cookie must work on either), user
    `admin` (ADMIN_TOKEN) and user `bob`."""
    root = tmp_path_factory.mktemp("console-server")
    srv = start_server(root / "data", workers=2)
    try:
        subprocess.run(
            [sys.executable, "-m", "kvbox.cli", "users", "create", "bob", "--token", BOB_BROWSER_TOKEN,
             "--data-dir", str(srv.data_dir)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        yield LiveServer(server=srv, admin_token=ADMIN_TOKEN, bob_token=BOB_BROWSER_TOKEN)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium through Playwright. Missing either is a failure, never a skip.

    Module-scoped: Playwright's sync API keeps an event loop running while it is open, and
    the async tests of other modules need to start their own."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("The console's browser tests need the `playwright` package (driver only): pip install playwright")
    if not CHROMIUM.exists():
        pytest.fail(f"The console's browser tests need Debian's Chromium at {CHROMIUM}: apt-get install -y chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
