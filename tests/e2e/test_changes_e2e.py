"""The change feed over real servers: `kvbox serve --workers 2` on SQLite and two scale-out
nodes on PostgreSQL + S3. A consumer that goes away during 10,000 writes from 4 concurrent
writers resumes from its cursor and gets every change exactly once, in order; a long-poll on
one worker or node wakes within a second of a write through another; Server-Sent Events
resume with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from backing_services import ScaleOut
from conftest import ServerProcess, start_scale_out_servers

from .conftest import create_user

pytestmark = [pytest.mark.slow, pytest.mark.anyio]

WRITES = 10_000
WRITERS = 4


@pytest.fixture(scope="module")
def nodes(scale_out: ScaleOut, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    servers = start_scale_out_servers(scale_out, tmp_path_factory.mktemp("feed-nodes"), nodes=2, workers=1)
    try:
        yield servers
    finally:
        for srv in servers:
            srv.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def urls(request: pytest.FixtureRequest, server: ServerProcess) -> tuple[list[str], str]:
    """(base URLs to write through, a token): one server with two workers, or two nodes."""
    if request.param == "sqlite":
        return [server.url], create_user(server.data_dir, "feed").token
    two: list[ServerProcess] = request.getfixturevalue("nodes")
    return [n.url for n in two], create_user(two[0].data_dir, "feed").token


def headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def write_all(urls: list[str], token: str, store: str) -> dict[str, set[str]]:
    """WRITES puts from WRITERS concurrent writers, spread over `urls` and (with a new
    connection each time now and then) over workers; returns each key's acknowledged ETags."""
    acked: dict[str, set[str]] = {}

    async def writer(n: int) -> None:
        async with httpx.AsyncClient(base_url=urls[n % len(urls)], headers=headers(token), timeout=30,
                                     limits=httpx.Limits(max_keepalive_connections=2)) as client:  # fmt: skip
            for i in range(WRITES // WRITERS):
                key = f"k{(n * 7919 + i) % 1500}"  # keys shared across writers: creates and updates
                r = await client.put(f"/v2/key-value-stores/{store}/records/{key}", content=f"{n}-{i}".encode())
                assert r.status_code in (200, 201), r.text
                acked.setdefault(key, set()).add(r.headers["etag"])

    await asyncio.gather(*(writer(n) for n in range(WRITERS)))
    return acked


async def read_page(client: httpx.AsyncClient, store: str, after: int, wait: int = 0) -> tuple[list[Any], int]:
    r = await client.get(f"/v2/key-value-stores/{store}/changes", params={"after": after, "wait": wait})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    return data["items"], data["lastSequence"]


async def test_a_consumer_that_goes_away_resumes_and_misses_nothing(urls: tuple[list[str], str]) -> None:
    bases, token = urls
    with httpx.Client(base_url=bases[0], headers=headers(token)) as c:
        store = c.post("/v2/key-value-stores", json={}).json()["data"]["id"]
    seen: list[dict[str, Any]] = []
    cursor = 0
    writing = asyncio.ensure_future(write_all(bases, token, store))
    # The consumer follows for a while from the last node, then goes away mid-stream.
    async with httpx.AsyncClient(base_url=bases[-1], headers=headers(token), timeout=60) as consumer:
        while len(seen) < 1500:
            items, cursor = await read_page(consumer, store, cursor, wait=5)
            seen += items
    assert not writing.done(), "the writers finished before the consumer went away"
    acked = await writing
    # Back after the writes: resume from the cursor, through a new connection (and worker).
    async with httpx.AsyncClient(base_url=bases[0], headers=headers(token), timeout=60) as consumer:
        while True:
            items, cursor = await read_page(consumer, store, cursor)
            if not items:
                break
            seen += items
    assert [c["sequence"] for c in seen] == list(range(1, WRITES + 1))
    assert sum(1 for c in seen if c["eventType"] == "RECORD.CREATED") == len(acked)
    assert {c["eventType"] for c in seen} == {"RECORD.CREATED", "RECORD.UPDATED"}
    logged: dict[str, set[str]] = {}
    for change in seen:
        logged.setdefault(change["key"], set()).add(change["etag"])
    assert logged == acked  # every acknowledged write, once each


async def test_a_long_poll_wakes_within_a_second_of_a_write_elsewhere(urls: tuple[list[str], str]) -> None:
    bases, token = urls
    with httpx.Client(base_url=bases[0], headers=headers(token)) as c:
        store = c.post("/v2/key-value-stores", json={}).json()["data"]["id"]
    for _ in range(3):  # with two workers, one of the tries lands the poll on the other worker
        fresh = {**headers(token), "Connection": "close"}
        async with (
            httpx.AsyncClient(base_url=bases[-1], headers=headers(token), timeout=60) as poller,
            httpx.AsyncClient(base_url=bases[0], headers=fresh) as writer,
        ):
            items, after = await read_page(poller, store, 0)
            waiting = asyncio.ensure_future(read_page(poller, store, after, wait=30))
            await asyncio.sleep(0.5)
            assert not waiting.done()
            await writer.put(f"/v2/key-value-stores/{store}/records/wake", content=b"x")
            written = time.monotonic()
            items, _ = await asyncio.wait_for(waiting, 10)
            assert [c["key"] for c in items] == ["wake"]
            assert time.monotonic() - written < 1.0


def test_server_sent_events_resume_with_last_event_id(urls: tuple[list[str], str]) -> None:
    bases, token = urls
    with httpx.Client(base_url=bases[0], headers=headers(token), timeout=30) as c:
        store = c.post("/v2/key-value-stores", json={}).json()["data"]["id"]
        for key in ("a", "b"):
            c.put(f"/v2/key-value-stores/{store}/records/{key}", content=b"x")
        events = sse(c, store, {}, count=2)
        assert [(e["id"], e["event"], json.loads(e["data"])["key"]) for e in events] == [
            ("1", "RECORD.CREATED", "a"), ("2", "RECORD.CREATED", "b")]  # fmt: skip
        for key in ("c", "d"):
            c.put(f"/v2/key-value-stores/{store}/records/{key}", content=b"x")
        resumed = sse(c, store, {"Last-Event-ID": "2"}, count=2, after=0)
        assert [json.loads(e["data"])["key"] for e in resumed] == ["c", "d"]


def sse(client: httpx.Client, store: str, extra: dict[str, str], *, count: int, after: int = 0) -> list[dict[str, str]]:
    """The first `count` events of a stream (then the client goes away)."""
    events: list[dict[str, str]] = []
    event: dict[str, str] = {}
    with client.stream("GET", f"/v2/key-value-stores/{store}/changes", params={"after": after},
                       headers={"Accept": "text/event-stream", **extra}) as r:  # fmt: skip
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if not line:
                if event:
                    events.append(event)
                    event = {}
                if len(events) == count:
                    break
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                event[name] = value
    return events
