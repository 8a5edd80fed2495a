"""The scale-out backend when its services fail: PostgreSQL restarting under a node, and an
S3 server that answers 500 or drops connections (a fault-injecting proxy in front of the
test S3 server). The node keeps serving what it can, answers `503` with `Retry-After` for
the rest, loses no acknowledged write, and recovers by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from backing_services import PostgresServer, ScaleOut
from conftest import ALICE_TOKEN
from kvbox.backends.s3.blobs import S3BlobStore
from kvbox.core.clock import FakeClock
from kvbox.server import create_app
from kvbox.service.container import Services, build_services
from kvbox.service.deployment import open_storage
from kvbox.service.settings import Settings

pytestmark = pytest.mark.anyio

S = "/v2/key-value-stores"
AUTH = {"Authorization": f"Bearer {ALICE_TOKEN}"}
BIG = 64 * 1024  # above the inline threshold below: the body goes to S3


class FaultyProxy:
    """A TCP proxy in front of the S3 server. `mode`: "pass" forwards, "500" answers every
    request with an S3 InternalError, "drop" closes every connection as soon as it opens.
    Changing the mode closes the connections already open."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> FaultyProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        self.mode = mode
        for writer in list(self._open):
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            if self.mode == "drop":
                return
            if self.mode == "500":
                await reader.readuntil(b"\r\n\r\n")
                body = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
                await writer.drain()
                return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._open.add(up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def stop(self) -> None:
        self.set_mode("drop")
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(65536):
            writer.write(chunk)
            await writer.drain()
    finally:
        writer.close()


async def node(settings: dict[str, Any], clock: FakeClock) -> tuple[Services, httpx.AsyncClient]:
    config = Settings(**settings, backend="postgres", public_url="http://kvbox.test", inline_threshold=1024,
                      rate_limits=False)  # fmt: skip
    index, _ = open_storage(config)
    # Two attempts per S3 request instead of five: the same answers, without minutes of backoff.
    blobs = S3BlobStore.from_url(settings["blob_url"], endpoint=settings["s3_endpoint"], max_attempts=2)
    svc = build_services(config, clock=clock, index=index, blobs=blobs)
    await svc.index.migrate()
    await svc.users.create_user("alice", token=ALICE_TOKEN)
    transport = httpx.ASGITransport(app=create_app(services=svc))
    return svc, httpx.AsyncClient(transport=transport, base_url="http://kvbox.test", headers=AUTH, timeout=60)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "service-unavailable"
    assert int(r.headers["retry-after"]) > 0


@pytest.fixture
async def proxy(scale_out: ScaleOut) -> AsyncIterator[FaultyProxy]:
    started = await FaultyProxy(scale_out.s3.port).start()
    yield started
    await started.stop()


async def test_s3_failing_and_dropping_connections(
    scale_out: ScaleOut, proxy: FaultyProxy, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {**scale_out.settings(), "s3_endpoint": proxy.endpoint}
    svc, client = await node(settings, clock)
    try:
        store = (await client.post(S, params={"name": "faulty"}, json={})).json()["data"]["id"]
        records = f"{S}/{store}/records"
        assert (await client.put(f"{records}/big", content=b"b" * BIG)).status_code == 201
        assert (await client.put(f"{records}/small", content=b"tiny")).status_code == 201
        for mode in ("500", "drop"):
            proxy.set_mode(mode)
            assert_unavailable(await client.put(f"{records}/new-{mode}", content=b"n" * BIG))
            assert_unavailable(await client.get(f"{records}/big"))
            # What does not need S3 keeps working.
            assert (await client.get(f"{records}/small")).content == b"tiny"
            assert (await client.head(f"{records}/big")).status_code == 200
            keys = (await client.get(f"{S}/{store}/keys")).json()["data"]["items"]
            assert [k["key"] for k in keys] == ["big", "small"]
            assert (await client.get(f"{records}/new-{mode}")).status_code == 404
        proxy.set_mode("pass")
        assert (await client.get(f"{records}/big")).content == b"b" * BIG
        assert (await client.put(f"{records}/new-500", content=b"n" * BIG)).status_code == 201
        assert (await client.get(f"{records}/new-500")).content == b"n" * BIG
        no_tracebacks(caplog)
    finally:
        await client.aclose()
        await svc.close()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own: it is stopped and started again."""
    pg = PostgresServer().start()
    try:
        yield pg
    finally:
        pg.stop()


async def test_postgres_restarting_under_a_node(
    scale_out: ScaleOut, own_postgres: PostgresServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"metadata_url": own_postgres.create_database(), "blob_url": f"s3://{scale_out.bucket}/"
                f"{uuid.uuid4().hex[:12]}", "s3_endpoint": scale_out.s3.endpoint}  # fmt: skip
    svc, client = await node(settings, clock)
    try:
        store = (await client.post(S, params={"name": "restarting"}, json={})).json()["data"]["id"]
        records = f"{S}/{store}/records"
        acknowledged = {}
        for i in range(10):
            body = (b"%d" % i) * (BIG if i % 2 else 10)
            assert (await client.put(f"{records}/k{i}", content=body)).status_code == 201
            acknowledged[f"k{i}"] = body

        await asyncio.to_thread(own_postgres.halt)
        for request in (client.get(f"{records}/k1"), client.put(f"{records}/down", content=b"x"),
                        client.get(f"{S}/{store}/keys"), client.get(S)):  # fmt: skip
            started = time.monotonic()
            assert_unavailable(await request)
            assert time.monotonic() - started < 30

        await asyncio.to_thread(own_postgres.resume)
        deadline = time.monotonic() + 30
        while (r := await client.get(f"{records}/k0")).status_code != 200:
            assert r.status_code == 503, r.text
            assert time.monotonic() < deadline, "the node did not reconnect by itself"
            await asyncio.sleep(0.2)
        for key, body in acknowledged.items():
            assert (await client.get(f"{records}/{key}")).content == body
        assert (await client.get(f"{records}/down")).status_code == 404
        assert (await client.put(f"{records}/after", content=b"a")).status_code == 201
        no_tracebacks(caplog)
    finally:
        await client.aclose()
        with contextlib.suppress(Exception):
            await svc.close()
