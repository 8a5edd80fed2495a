"""Every request: an `X-Request-Id`, one access log line, and forwarding headers believed only
from trusted proxies."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from time import perf_counter
from typing import Any

import httpx
import pytest

from conftest import ALICE_TOKEN
from kvbox.api.http import Message, Receive, Scope, Send
from kvbox.api.logs import PIPE_BUF, AccessLog, Answered, LogFormatter, who_of
from kvbox.api.middleware import Observer
from kvbox.api.proxies import TrustedProxies
from kvbox.server import KvboxApp
from kvbox.service.container import Services
from kvbox.service.metrics import HTTP_REQUESTS
from kvbox.service.ratelimit import Limits

pytestmark = pytest.mark.anyio
AUTH = {"Authorization": f"Bearer {ALICE_TOKEN}"}
RECORD_ROUTE = "/v2/key-value-stores/{store}/records/{key}"
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Served:
    """An app whose access log goes to a file, and a client that comes from `peer`."""

    def __init__(self, services: Services, log_path: Path, fmt: str, proxies: str, peer: str) -> None:
        self.log_path = log_path
        self._fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.observer = Observer(
            metrics=services.metrics,
            access_log=AccessLog(fmt, fd=self._fd),
            proxies=TrustedProxies(proxies) if proxies else None,
        )
        self.app = KvboxApp(services, observer=self.observer)
        transport = httpx.ASGITransport(app=self.app, client=(peer, 40000))
        self.client = httpx.AsyncClient(transport=transport, base_url="http://kvbox.test")

    def lines(self) -> list[str]:
        self.observer.flush()
        return self.log_path.read_text().splitlines()

    def entries(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]

    async def aclose(self) -> None:
        await self.client.aclose()
        os.close(self._fd)


@pytest.fixture
async def served(services: Services, tmp_path: Path) -> AsyncIterator[Served]:
    s = Served(services, tmp_path / "access.log", "json", "", "203.0.113.7")
    yield s
    await s.aclose()


async def store_id(client: httpx.AsyncClient) -> str:
    r = await client.post("/v2/key-value-stores", params={"name": "observed"}, headers=AUTH, json={})
    return str(r.json()["data"]["id"])


async def test_every_response_carries_a_request_id(served: Served) -> None:
    sid = await store_id(served.client)
    responses = [
        await served.client.get(f"/v2/key-value-stores/{sid}", headers=AUTH),
        await served.client.get("/v2/no-such-route"),
        await served.client.get(f"/v2/key-value-stores/{sid}/records/missing", headers=AUTH),
        await served.client.delete("/health"),
        await served.client.options(f"/v2/key-value-stores/{sid}"),
        await served.client.get("/health"),
        await served.client.get("/sign-in"),
    ]
    ids = [r.headers.get("x-request-id") for r in responses]
    assert all(ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123_X.y", True), ("a" * 128, True), ("a" * 129, False), ("bad id", False), ("ünï", False), ("", False)],
)
async def test_the_callers_request_id_is_kept_when_it_is_well_formed(served: Served, sent: str, kept: bool) -> None:
    r = await served.client.get("/health", headers=[(b"X-Request-Id", sent.encode())])
    assert (r.headers["x-request-id"] == sent) is kept
    assert served.entries()[-1]["request_id"] == r.headers["x-request-id"]


async def test_one_json_access_line_per_request(served: Served) -> None:
    sid = await store_id(served.client)
    url = f"/v2/key-value-stores/{sid}/records/k1"
    put = await served.client.put(url, content=b"hello", headers=AUTH)
    get = await served.client.get(url, headers=AUTH)
    anonymous = await served.client.get(url)
    entries = served.entries()
    assert len(entries) == 4
    put_line, get_line, anon_line = entries[1:]
    assert put_line["request_id"] == put.headers["x-request-id"]
    assert put_line | {"time": "", "duration_ms": 0} == {
        "time": "",
        "level": "info",
        "type": "access",
        "request_id": put.headers["x-request-id"],
        "method": "PUT",
        "path": url,
        "route": RECORD_ROUTE,
        "status": 201,
        "bytes_in": 5,
        "bytes_out": len(put.content),
        "duration_ms": 0,
        "client": "203.0.113.7",
        "store": sid,
        "user": "alice",
    }
    assert put_line["time"].endswith("Z") and len(put_line["time"]) == len("2026-01-01T00:00:00.000Z")
    assert put_line["duration_ms"] >= 0
    assert (get_line["status"], get_line["bytes_out"], get_line["request_id"]) == (200, 5, get.headers["x-request-id"])
    assert (anon_line["status"], anon_line["user"]) == (anonymous.status_code, None)


async def _answer(scope: Scope, receive: Receive, send: Send) -> None:
    scope["kvbox.route"] = "/observed"
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _ignore(message: Message) -> None:
    pass


def _observed(n: int) -> dict[str, Any]:
    return {"type": "http", "method": "GET", "path": "/observed", "headers": [(b"x-request-id", f"given-{n}".encode())]}


def _logged(path: Path, count: int) -> list[str]:
    """The request ids of the log's lines, once `count` are there (waiting at most 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        lines = path.read_text().splitlines()
        if len(lines) >= count or time.monotonic() > deadline:
            return [json.loads(line)["request_id"] for line in lines]
        time.sleep(0.02)


async def test_requests_are_counted_and_logged_once_each_after_the_turn_that_answered_them(
    services: Services, tmp_path: Path
) -> None:
    """Counting and logging wait for the end of the loop's turn, all requests of the turn
    together; a snapshot taken before that (a scrape) counts them first."""
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    observer = Observer(metrics=services.metrics, access_log=AccessLog("json", fd=fd))

    def requested() -> float:
        return services.metrics.snapshot().values.get(HTTP_REQUESTS.name, {}).get(("/observed", "GET", "204"), 0)

    try:
        for n in range(3):
            await observer(_answer, _observed(n), _no_body, _ignore, "unmatched")
        assert path.read_text() == ""  # nothing written on the requests' path
        assert requested() == 3  # counted before the snapshot, though the turn has not ended
        deadline = time.monotonic() + 5
        while path.read_text().count("\n") < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)  # the turn's end, then the log's timer, without a flush
        assert [json.loads(line)["request_id"] for line in path.read_text().splitlines()] == [
            f"given-{n}" for n in range(3)
        ]
        assert requested() == 3  # nothing counted twice
    finally:
        os.close(fd)


def test_a_batch_left_by_a_closed_loop_is_recorded_by_the_next_one(tmp_path: Path) -> None:
    """An app used from one `asyncio.run` after another: the first loop closes before the log's
    timer fires, and the next loop's requests still get everything written."""
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    observer = Observer(access_log=AccessLog("json", fd=fd))

    async def one(n: int) -> None:
        await observer(_answer, _observed(n), _no_body, _ignore, "unmatched")

    async def one_then_wait(n: int) -> None:
        await one(n)
        deadline = time.monotonic() + 5
        while path.read_text().count("\n") < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    try:
        asyncio.run(one(0))  # the loop is gone before FLUSH_AFTER_S
        assert path.read_text() == ""
        asyncio.run(one_then_wait(1))
        assert _logged(path, 2) == ["given-0", "given-1"]
    finally:
        os.close(fd)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _scope(n: int) -> dict[str, Any]:
    path = f"/v2/key-value-stores/s{n % 7}/records/key-{n}-" + "x" * 200
    return {"type": "http", "method": "GET", "path": path, "client": ("192.0.2.1", 1), "kvbox.user": "alice"}


def _entry(
    scope: dict[str, Any],
    request_id: str,
    route: str,
    status: int,
    received: int,
    sent: int,
    seconds: float,
    ended: float,
) -> Answered:
    """The observer's record of an answered request."""
    return (who_of(scope, route), scope["path"], request_id, status, received, sent, seconds, ended)


def _spy_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write the access log hands the system, as sent (and still written)."""
    writes: list[bytes] = []
    real = os.write

    def write(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr("kvbox.api.logs.os.write", write)
    return writes


async def test_a_pipe_gets_writes_of_whole_lines_within_pipe_buf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several workers share a pipe (a container's standard output): a write is atomic only
    up to PIPE_BUF, so no write is longer, and every write ends on a line."""
    writes = _spy_writes(monkeypatch)
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 1 << 20)  # room for every line: nothing reads during a flush
    os.set_blocking(read_end, False)
    log = AccessLog("json", fd=write_end)
    received = bytearray()
    try:
        for n in range(300):  # past FLUSH_LINES: flushed while logging
            log.requests([_entry(_scope(n), f"id-{n}", RECORD_ROUTE, 200, 0, 10, 0.001, perf_counter())])
            with contextlib.suppress(BlockingIOError):
                received += os.read(read_end, 1 << 20)
        log.flush()
        with contextlib.suppress(BlockingIOError):
            received += os.read(read_end, 1 << 20)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert len(writes) > 1
    assert all(len(w) <= PIPE_BUF and w.endswith(b"\n") for w in writes)
    lines = received.decode().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"id-{n}" for n in range(300)]


async def test_a_line_longer_than_pipe_buf_goes_alone_and_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    writes = _spy_writes(monkeypatch)
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, F_SETPIPE_SZ, 1 << 20)
    long = {**_scope(1), "path": "/v2/key-value-stores/s/records/" + "y" * (PIPE_BUF + 500)}
    log = AccessLog("json", fd=write_end)
    try:
        log.requests([_entry(_scope(n), f"id-{n}", RECORD_ROUTE, 200, 0, 10, 0.001, perf_counter()) for n in range(10)])
        log.requests([_entry(long, "id-long", RECORD_ROUTE, 200, 0, 10, 0.001, perf_counter())])
        log.requests(
            [_entry(_scope(n), f"id-{n}", RECORD_ROUTE, 200, 0, 10, 0.001, perf_counter()) for n in range(10, 20)]
        )
        log.flush()
        received = os.read(read_end, 1 << 20)
    finally:
        os.close(read_end)
        os.close(write_end)
    (alone,) = (w for w in writes if len(w) > PIPE_BUF)
    assert alone.count(b"\n") == 1 and b"id-long" in alone
    assert all(w.endswith(b"\n") for w in writes)
    entries = [json.loads(line) for line in received.decode().splitlines()]
    assert [e["request_id"] for e in entries] == [*(f"id-{n}" for n in range(10)), "id-long",
                                                  *(f"id-{n}" for n in range(10, 20))]  # fmt: skip
    assert entries[10]["path"] == long["path"]


async def test_a_line_carries_the_time_its_request_ended(tmp_path: Path) -> None:
    """Lines are built in batches, after the fact: each still says when its request ended."""
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    log = AccessLog("json", fd=fd)
    now = perf_counter()
    try:
        log.requests([_entry(_scope(1), "id-early", RECORD_ROUTE, 200, 0, 10, 0.001, now - 3.0),
                      _entry(_scope(2), "id-late", RECORD_ROUTE, 200, 0, 10, 0.001, now)])  # fmt: skip
        log.flush()
    finally:
        os.close(fd)
    early, late = (json.loads(line) for line in path.read_text().splitlines())
    gap = datetime.fromisoformat(late["time"]) - datetime.fromisoformat(early["time"])
    assert 2.99 <= gap.total_seconds() <= 3.01


async def test_a_file_gets_a_batch_in_one_write(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    writes = _spy_writes(monkeypatch)
    path = tmp_path / "access.log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    log = AccessLog("json", fd=fd)
    try:
        for n in range(50):
            log.requests([_entry(_scope(n), f"id-{n}", RECORD_ROUTE, 200, 0, 10, 0.001, perf_counter())])
        assert path.read_bytes() == b""  # the batch waits (up to FLUSH_AFTER_S)
        log.flush()
    finally:
        os.close(fd)
    assert len(writes) == 1 and len(writes[0]) > PIPE_BUF
    lines = path.read_text().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"id-{n}" for n in range(50)]


async def test_text_access_lines(services: Services, tmp_path: Path) -> None:
    served = Served(services, tmp_path / "access.log", "text", "", "198.51.100.1")
    try:
        r = await served.client.get("/v2/key-value-stores/~missing store/keys", headers=AUTH)
        (line,) = served.lines()
    finally:
        await served.aclose()
    rid = r.headers["x-request-id"]
    assert f" 198.51.100.1 {rid} " in line
    assert '"GET /v2/key-value-stores/~missing\\u0020store/keys" 404 ' in line
    assert "route=/v2/key-value-stores/{store}/keys" in line
    assert "store=~missing\\u0020store user=alice" in line


async def test_errors_are_logged_with_the_request_id_and_a_stack_trace(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(served.app.api.services.stores, "list", broken)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogFormatter("json"))
    logger = logging.getLogger("kvbox")
    logger.addHandler(handler)
    try:
        r = await served.client.get("/v2/key-value-stores", headers=AUTH)
    finally:
        logger.removeHandler(handler)
    assert r.status_code == 500
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert logged and logged[-1]["request_id"] == r.headers["x-request-id"]
    assert logged[-1]["level"] == "error"
    assert "Traceback" in logged[-1]["error"] and "the disk caught fire" in logged[-1]["error"]
    assert served.entries()[-1]["status"] == 500


def test_the_client_is_the_rightmost_untrusted_hop() -> None:
    proxies = TrustedProxies("10.0.0.0/8,127.0.0.1/32")
    assert proxies.client_of("198.51.100.4", "10.1.1.1") == "198.51.100.4"
    assert proxies.client_of("6.6.6.6, 198.51.100.4, 10.0.0.2", "10.1.1.1") == "198.51.100.4"
    assert proxies.client_of("10.0.0.3, 10.0.0.2", "10.1.1.1") == "10.0.0.3"
    assert proxies.client_of("198.51.100.4:5555", "10.1.1.1") == "198.51.100.4"
    assert proxies.client_of("[2001:db8::1]:443", "10.1.1.1") == "2001:db8::1"
    assert proxies.client_of("garbage", "10.1.1.1") == "10.1.1.1"
    assert proxies.client_of("198.51.100.4, garbage", "10.1.1.1") == "10.1.1.1"


async def anonymous_statuses(served: Served, forwarded_for: list[str]) -> list[int]:
    statuses = []
    for address in forwarded_for:
        r = await served.client.get("/v2/key-value-stores/no-such-store", headers={"X-Forwarded-For": address})
        statuses.append(r.status_code)
    return statuses


async def test_a_trusted_proxys_forwarded_for_drives_the_anonymous_rate_limit(
    services: Services, tmp_path: Path
) -> None:
    services.limiter.limits = Limits(enabled=True, user_per_second=1)
    served = Served(services, tmp_path / "access.log", "json", "10.0.0.0/8", "10.9.9.9")
    try:
        # Each real client has its own budget of one request (the clock stands still).
        assert await anonymous_statuses(served, ["198.51.100.1", "198.51.100.2", "198.51.100.3"]) == [404] * 3
        assert await anonymous_statuses(served, ["198.51.100.1"]) == [429]
        clients = [e["client"] for e in served.entries()]
        assert clients == ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.1"]
    finally:
        await served.aclose()


async def test_an_untrusted_peers_forwarded_for_is_ignored(services: Services, tmp_path: Path) -> None:
    services.limiter.limits = Limits(enabled=True, user_per_second=1)
    served = Served(services, tmp_path / "access.log", "json", "10.0.0.0/8", "192.0.2.50")
    try:
        assert await anonymous_statuses(served, ["198.51.100.1", "198.51.100.2"]) == [404, 429]
        assert {e["client"] for e in served.entries()} == {"192.0.2.50"}
    finally:
        await served.aclose()


async def test_urls_follow_the_scheme_and_host_a_trusted_proxy_forwards(services: Services, tmp_path: Path) -> None:
    services.settings.public_url = None
    served = Served(services, tmp_path / "access.log", "json", "10.0.0.0/8", "10.0.0.5")
    try:
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "kv.example.com", **AUTH}
        r = await served.client.post("/v2/key-value-stores", params={"name": "behind"}, headers=forwarded, json={})
        assert r.headers["location"].startswith("https://kv.example.com/v2/key-value-stores/")
        assert r.json()["data"]["consoleUrl"].startswith("https://kv.example.com/stores/")
        sid = r.json()["data"]["id"]
        r = await served.client.put(f"/v2/key-value-stores/{sid}/records/a", content=b"1", headers=forwarded)
        assert r.headers["location"] == f"https://kv.example.com/v2/key-value-stores/{sid}/records/a"
        # Through the proxy with the Host header only.
        r = await served.client.get(f"/v2/key-value-stores/{sid}", headers={"X-Forwarded-Proto": "https", **AUTH})
        assert r.json()["data"]["consoleUrl"].startswith("https://kvbox.test/stores/")
        # A configured public URL always wins.
        services.settings.public_url = "https://public.example.org"
        r = await served.client.get(f"/v2/key-value-stores/{sid}", headers=forwarded)
        assert r.json()["data"]["consoleUrl"].startswith("https://public.example.org/stores/")
    finally:
        await served.aclose()


async def test_forwarded_scheme_and_host_from_an_untrusted_peer_change_nothing(
    services: Services, tmp_path: Path
) -> None:
    services.settings.public_url = None
    served = Served(services, tmp_path / "access.log", "json", "10.0.0.0/8", "192.0.2.50")
    try:
        forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example", **AUTH}
        r = await served.client.post("/v2/key-value-stores", params={"name": "direct"}, headers=forwarded, json={})
        assert r.json()["data"]["consoleUrl"].startswith(services.settings.base_url + "/stores/")
    finally:
        await served.aclose()
