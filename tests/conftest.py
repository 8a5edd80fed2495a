"""Shared fixtures: services on every backend, an in-process API client, real server processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from backing_services import AWS_TEST_ENV, COMMAND_ENV, ScaleOut, kvbox_migrate
from kvbox.core.clock import FakeClock
from kvbox.server import create_app
from kvbox.service.container import Services, build_services
from kvbox.service.settings import Settings

BACKENDS = ["memory", "sqlite", "postgres"]
ALICE_TOKEN = "alice-token-0123456789"
BOB_TOKEN = "bob-token-0123456789ab"
ADMIN_TOKEN = "admin-token-0123456789"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with the real services it drives (`postgres`, `s3`, `browser`), so that
    `-m "not postgres and not s3 and not browser"` (`make test-quick`) leaves them out."""
    for item in items:
        for marker in sorted(services_of(item)):
            item.add_marker(marker)


def services_of(item: pytest.Item) -> set[str]:
    """The services a test reaches through its fixtures.

    `scale_out` starts PostgreSQL and the S3 server together, so reaching it means both. Fixtures
    parametrized over backends reach it with `request.getfixturevalue`, which the fixture closure
    does not show: there the parameter value (`postgres`, `s3`) tells.
    """
    fixtures = set(getattr(item, "fixturenames", ()))
    callspec = getattr(item, "callspec", None)
    values = {v for v in callspec.params.values() if isinstance(v, str)} if callspec else set()
    needs = set()
    if "scale_out" in fixtures or values & {"postgres", "s3"}:
        needs |= {"postgres", "s3"}
    if "browser" in fixtures:
        needs.add("browser")
    return needs


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_ms=int(time.time() * 1000))


@pytest.fixture(scope="session")
def scale_out() -> Iterator[ScaleOut]:
    """PostgreSQL (Debian's binaries, temp dir) and moto's S3 server, both on loopback, for the
    whole session. Fails (never skips) when either is missing."""
    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_TEST_ENV.items():
            mp.setenv(name, value)
        services = ScaleOut.start()
        try:
            yield services
        finally:
            services.stop()


@pytest.fixture(params=BACKENDS)
async def services(request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock) -> AsyncIterator[Services]:
    """Services on each backend, with users alice and bob."""
    scale_out = request.getfixturevalue("scale_out").settings() if request.param == "postgres" else {}
    settings = Settings(
        **scale_out,
        backend=request.param,
        data_dir=tmp_path / "data",
        public_url="http://kvbox.test",
        inline_threshold=1024,
        max_record_size=4 * 1024 * 1024,
        rate_limits=False,
    )
    svc = build_services(settings, clock=clock)
    await svc.index.migrate()  # `kvbox migrate`; nothing to do for the others
    await svc.users.create_user("alice", token=ALICE_TOKEN)
    await svc.users.create_user("bob", token=BOB_TOKEN)
    try:
        yield svc
    finally:
        await svc.close()


@dataclass
class Api:
    """An in-process HTTP client on the app, with a token per user."""

    client: httpx.AsyncClient
    services: Services

    def auth(self, token: str | None = ALICE_TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def create_store(self, name: str | None = None, token: str = ALICE_TOKEN) -> dict[str, Any]:
        params = {"name": name} if name else {}
        r = await self.client.post("/v2/key-value-stores", params=params, headers=self.auth(token), json={})
        assert r.status_code in (200, 201), r.text
        data: dict[str, Any] = r.json()["data"]
        return data


@pytest.fixture
async def api(services: Services) -> AsyncIterator[Api]:
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://kvbox.test") as client:
        yield Api(client=client, services=services)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    admin_token: str

    def stop(self, sig: int | None = None) -> None:
        if self.proc.poll() is None:
            if sig is None:
                self.proc.terminate()
            else:
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=15)


def start_server(
    data_dir: Path, *, workers: int = 1, extra_env: dict[str, str] | None = None, port: int | None = None
) -> ServerProcess:
    """Start `kvbox serve` as a real process on 127.0.0.1 and wait for /health."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "KVBOX_ADMIN_TOKEN": ADMIN_TOKEN,
        "KVBOX_PUBLIC_URL": url,
        # Rate limits have their own tests; elsewhere they would only slow the suites down.
        "KVBOX_RATE_LIMITS": "false",
        **(extra_env or {}),
    }
    log = data_dir.parent / f"server-{port}.log"
    # The server process keeps its own copy of the descriptor, so ours can be closed at once.
    with open(log, "ab") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kvbox.cli",
                "serve",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"kvbox serve exited with {proc.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return ServerProcess(url=url, data_dir=data_dir, proc=proc, admin_token=ADMIN_TOKEN)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    os.killpg(proc.pid, 9)
    raise RuntimeError("kvbox serve did not become healthy within 30 s")


def start_scale_out_servers(
    scale_out: ScaleOut, root: Path, *, nodes: int = 1, workers: int = 2, extra_env: dict[str, str] | None = None
) -> list[ServerProcess]:
    """`kvbox migrate` on a fresh database and key prefix, then `nodes` servers sharing them."""
    backend = scale_out.server_env()
    kvbox_migrate(backend)
    servers: list[ServerProcess] = []
    try:
        for n in range(nodes):
            (root / f"node{n}").mkdir(parents=True)
            servers.append(start_server(root / f"node{n}" / "data", workers=workers,
                                        extra_env={**backend, **(extra_env or {})}))  # fmt: skip
            COMMAND_ENV[servers[-1].data_dir] = backend
    except BaseException:
        for srv in servers:
            srv.stop()
        raise
    return servers


@pytest.fixture(scope="session")
def scale_out_server(scale_out: ScaleOut, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real `kvbox serve --workers 2` process on PostgreSQL + S3 for the whole session."""
    (srv,) = start_scale_out_servers(scale_out, tmp_path_factory.mktemp("scale-out-server"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One real `kvbox serve --workers 2` process on SQLite for the whole session."""
    root = tmp_path_factory.mktemp("server")
    srv = start_server(root / "data", workers=2)
    try:
        yield srv
    finally:
        srv.stop()
