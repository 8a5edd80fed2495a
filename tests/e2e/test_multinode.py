"""Two `kvbox serve` nodes on different ports sharing one PostgreSQL database and one bucket:
what one node acknowledges, the other serves at once, and no acknowledged write is lost."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from backing_services import COMMAND_ENV, ScaleOut, stored_objects
from conftest import ServerProcess, start_scale_out_servers, start_server

from .conftest import create_user, last_line, new_connection_client, run_kvbox

pytestmark = pytest.mark.slow

INLINE = 64 * 1024  # the default inline threshold: larger bodies live in S3


@pytest.fixture(scope="module")
def nodes(scale_out: ScaleOut, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    root = tmp_path_factory.mktemp("multinode")
    servers = start_scale_out_servers(
        scale_out, root, nodes=2, workers=1,
        extra_env={"KVBOX_UNNAMED_RETENTION": "2s", "KVBOX_SWEEP_INTERVAL": "0.2"},
    )  # fmt: skip
    try:
        yield servers
    finally:
        for srv in servers:
            srv.stop()


@pytest.fixture(scope="module")
def token(nodes: list[ServerProcess]) -> str:
    return create_user(nodes[0].data_dir, "multi").token


@pytest.fixture
def clients(nodes: list[ServerProcess], token: str) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """A client on each node."""
    a, b = (httpx.Client(base_url=n.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) for n in nodes)
    with a, b:
        yield a, b


def new_store(client: httpx.Client, name: str | None = None) -> str:
    r = client.post("/v2/key-value-stores", params={"name": name} if name else {}, json={})
    assert r.status_code in (200, 201), r.text
    return str(r.json()["data"]["id"])


def tagged(writer: str, n: int, size: int) -> bytes:
    """A body that proves its own integrity: a header with the SHA-256 of the payload."""
    payload = (f"{writer}-{n}-".encode() * (size // 8 + 1))[:size]
    return hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def intact(body: bytes) -> bool:
    digest, _, payload = body.partition(b"\n")
    return hashlib.sha256(payload).hexdigest().encode() == digest


def test_a_write_acknowledged_by_one_node_is_read_on_the_other_at_once(
    nodes: list[ServerProcess], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = clients
    store = new_store(a, "read-after-write")
    rnd = random.Random(1)
    for i in range(60):
        writer, reader = (a, b) if i % 2 == 0 else (b, a)
        body = tagged("w", i, rnd.choice([10, 5_000, INLINE + 1, 300_000]))
        key = f"k{i % 7}"  # keys are rewritten, so a stale read would show
        assert writer.put(f"/v2/key-value-stores/{store}/records/{key}", content=body).status_code in (200, 201)
        got = reader.get(f"/v2/key-value-stores/{store}/records/{key}")
        assert got.status_code == 200 and got.content == body, (i, len(body))
    assert a.delete(f"/v2/key-value-stores/{store}/records/k0").status_code == 204
    assert b.get(f"/v2/key-value-stores/{store}/records/k0").status_code == 404


def test_concurrent_writers_on_both_nodes_leave_one_intact_value(
    nodes: list[ServerProcess], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = clients
    store = new_store(a, "contended")
    url = f"/v2/key-value-stores/{store}/records/hot"
    objects_before = len(bucket_objects(nodes[0]))
    written: set[bytes] = set()
    seen_bad: list[int] = []
    stop = threading.Event()

    def write(client: httpx.Client, writer: str) -> None:
        rnd = random.Random(writer)
        for n in range(25):
            body = tagged(writer, n, rnd.choice([100, INLINE * 2, 200_000]))
            written.add(body)
            assert client.put(url, content=body).status_code in (200, 201)

    def read(client: httpx.Client) -> None:
        while not stop.is_set():
            r = client.get(url)
            if r.status_code == 200 and not intact(r.content):
                seen_bad.append(len(r.content))

    with ThreadPoolExecutor(max_workers=6) as pool:
        readers = [pool.submit(read, c) for c in (a, b)]
        writers = [pool.submit(write, c, f"{name}{i}") for i in range(2) for name, c in (("a", a), ("b", b))]
        for f in writers:
            f.result()
        stop.set()
        for f in readers:
            f.result()
    assert seen_bad == []  # no reader ever saw a torn or mixed body
    final_a, final_b = a.get(url), b.get(url)
    assert final_a.content == final_b.content and final_a.content in written and intact(final_a.content)
    # Replaced bodies were deleted: of this key's bodies, only the one the row points to is left.
    left = len(bucket_objects(nodes[0])) - objects_before
    assert left == (1 if len(final_a.content) > INLINE else 0)


def bucket_objects(node: ServerProcess) -> dict[str, int]:
    return stored_objects(COMMAND_ENV[node.data_dir])


def test_key_listings_agree_on_both_nodes(
    nodes: list[ServerProcess], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = clients
    store = new_store(a, "listing")

    def put(i: int) -> None:
        client = a if i % 2 else b
        assert client.put(f"/v2/key-value-stores/{store}/records/key-{i:04d}", content=b"x" * i).status_code < 300

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, range(250)))

    def listing(client: httpx.Client) -> list[tuple[str, int]]:
        keys: list[tuple[str, int]] = []
        params: dict[str, str | int] = {"limit": 37}
        while True:
            data = client.get(f"/v2/key-value-stores/{store}/keys", params=params).json()["data"]
            keys += [(item["key"], item["size"]) for item in data["items"]]
            if not data["isTruncated"]:
                return keys
            params["exclusiveStartKey"] = data["nextExclusiveStartKey"]

    on_a, on_b = listing(a), listing(b)
    assert on_a == on_b == [(f"key-{i:04d}", i) for i in range(250)]


def test_expired_unnamed_stores_are_swept(
    nodes: list[ServerProcess], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = clients
    store = new_store(a)  # unnamed; the nodes keep them 2 s
    assert b.get(f"/v2/key-value-stores/{store}").status_code == 200

    def listed(client: httpx.Client) -> bool:  # listing does not count as an access; a GET would
        items = client.get("/v2/key-value-stores", params={"unnamed": "1", "limit": 1000}).json()["data"]["items"]
        return any(item["id"] == store for item in items)

    deadline = time.monotonic() + 20
    while listed(a):
        assert time.monotonic() < deadline, "the store was never swept"
        time.sleep(0.3)
    assert not listed(b)
    assert b.get(f"/v2/key-value-stores/{store}").status_code == 404


def test_killing_a_node_loses_no_acknowledged_write(
    nodes: list[ServerProcess], token: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A third node takes writes and is killed with SIGKILL mid-stream; node B then serves
    every write the dead node had acknowledged."""
    backend = COMMAND_ENV[nodes[0].data_dir]
    victim = start_server(tmp_path / "data", workers=1, extra_env=backend)
    survivor = new_connection_client(nodes[1].url, token)
    request.addfinalizer(survivor.close)
    store = new_store(survivor, "survives")
    acknowledged: dict[str, bytes] = {}
    lock = threading.Lock()

    def write(worker: int) -> None:
        with new_connection_client(victim.url, token) as client:
            write_until_killed(client, worker)

    def write_until_killed(client: httpx.Client, worker: int) -> None:
        for n in range(10_000):
            key = f"w{worker}-{n}"
            body = tagged(key, n, random.Random(key).choice([50, INLINE + 10, 150_000]))
            try:
                r = client.put(f"/v2/key-value-stores/{store}/records/{key}", content=body)
            except httpx.HTTPError:
                return  # the node is gone
            if r.status_code in (200, 201):
                with lock:
                    acknowledged[key] = body

    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(write, w) for w in range(4)]
        deadline = time.monotonic() + 20
        while len(acknowledged) < 60 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(timeout=15)
        for f in futures:
            f.result()
    assert len(acknowledged) >= 60
    for key, body in acknowledged.items():
        r = survivor.get(f"/v2/key-value-stores/{store}/records/{key}")
        assert r.status_code == 200 and r.content == body, key


def test_expiry_rules_and_deletes_by_prefix_hold_on_every_node(
    nodes: list[ServerProcess], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, b = clients
    store = new_store(a, "lifecycle-nodes")
    big = b"B" * (INLINE + 1)  # kept in S3
    for key in ("tmp-1", "tmp-2", "keep"):
        assert a.put(f"/v2/key-value-stores/{store}/records/{key}", content=big).status_code == 201
    assert (
        b.put(f"/v2/key-value-stores/{store}/records/own", content=b"x", params={"expiresIn": "1"}).status_code == 201
    )
    assert a.get(f"/v2/key-value-stores/{store}/records/own").headers["kvbox-expires-at"]
    r = b.delete(f"/v2/key-value-stores/{store}/records", params={"prefix": "tmp-"})
    assert r.json() == {"data": {"deletedCount": 2}}
    assert a.get(f"/v2/key-value-stores/{store}/records/tmp-1").status_code == 404
    r = a.put(f"/v2/key-value-stores/{store}", json={"recordExpiry": [{"prefix": "k", "expireAfterSecs": 1}]})
    assert r.status_code == 200
    assert b.get(f"/v2/key-value-stores/{store}").json()["data"]["recordExpiry"] == [
        {"prefix": "k", "expireAfterSecs": 1}
    ]
    deadline = time.monotonic() + 20
    while True:  # both expire on both nodes, and the sweepers reclaim them and their S3 objects
        data = b.get(f"/v2/key-value-stores/{store}").json()["data"]
        gone = all(c.get(f"/v2/key-value-stores/{store}/records/{k}").status_code == 404
                   for c in (a, b) for k in ("own", "keep"))  # fmt: skip
        if gone and data["recordCount"] == 0 and data["stats"]["storageBytes"] == 0:
            break
        assert time.monotonic() < deadline, data
        time.sleep(0.3)
    assert a.get(f"/v2/key-value-stores/{store}/keys").json()["data"]["items"] == []


# --- authorization changed through one node is honoured by the other on its next request ----


def _warm(client: httpx.Client, store: str, key: str) -> None:
    """A GET and a PUT that succeed, so the node holds whatever it keeps for this caller."""
    for _ in range(3):
        put = client.put(f"/v2/key-value-stores/{store}/records/{key}", content=b"warm", headers=_BYTES)
        assert put.status_code == 201, put.text
        get = client.get(f"/v2/key-value-stores/{store}/records/{key}")
        assert get.status_code == 200, get.text


_BYTES = {"Content-Type": "application/octet-stream"}


def test_a_revoked_token_is_refused_by_the_other_node_on_its_next_request(
    nodes: list[ServerProcess], clients: tuple[httpx.Client, httpx.Client], token: str
) -> None:
    a, _ = clients
    store = new_store(a, "revoked-token")
    username = a.get("/v2/users/me").json()["data"]["username"]
    extra = last_line(
        run_kvbox("tokens", "create", username, "--name", "short-lived", data_dir=nodes[0].data_dir).stdout
    )
    with httpx.Client(base_url=nodes[1].url, headers={"Authorization": f"Bearer {extra}"}, timeout=30) as b:
        _warm(b, store, "k")
        run_kvbox("tokens", "revoke", extra, data_dir=nodes[0].data_dir)
        assert b.get(f"/v2/key-value-stores/{store}/records/k").status_code == 401
        assert b.put(f"/v2/key-value-stores/{store}/records/k", content=b"no", headers=_BYTES).status_code == 401
    assert a.get(f"/v2/key-value-stores/{store}/records/k").content == b"warm"  # the refused PUT wrote nothing


def test_a_removed_grant_is_honoured_by_the_other_node_on_its_next_request(
    nodes: list[ServerProcess], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, _ = clients
    store = new_store(a, "removed-grant")
    guest = create_user(nodes[0].data_dir, "guest")
    assert (
        a.put(f"/v2/key-value-stores/{store}/grants/{guest.username}", json={"permission": "WRITE"}).status_code == 200
    )
    with httpx.Client(base_url=nodes[1].url, headers={"Authorization": f"Bearer {guest.token}"}, timeout=30) as b:
        _warm(b, store, "shared")
        # Lowered to READ through node A: the next PUT on B is refused, a GET still served.
        assert (
            a.put(f"/v2/key-value-stores/{store}/grants/{guest.username}", json={"permission": "READ"}).status_code
            == 200
        )
        assert b.put(f"/v2/key-value-stores/{store}/records/shared", content=b"no", headers=_BYTES).status_code == 403
        assert b.get(f"/v2/key-value-stores/{store}/records/shared").status_code == 200
        assert a.delete(f"/v2/key-value-stores/{store}/grants/{guest.username}").status_code in (200, 204)
        assert b.get(f"/v2/key-value-stores/{store}/records/shared").status_code == 403
        assert b.put(f"/v2/key-value-stores/{store}/records/shared", content=b"no", headers=_BYTES).status_code == 403
    assert a.get(f"/v2/key-value-stores/{store}/records/shared").content == b"warm"


def test_general_access_changed_through_one_node_is_honoured_by_the_other_at_once(
    nodes: list[ServerProcess], clients: tuple[httpx.Client, httpx.Client]
) -> None:
    a, _ = clients
    store = new_store(a, "general-access")
    assert a.put(f"/v2/key-value-stores/{store}/records/public", content=b"hi", headers=_BYTES).status_code == 201
    record = f"/v2/key-value-stores/{store}/records/public"
    with httpx.Client(base_url=nodes[1].url, timeout=30) as anonymous:
        assert anonymous.get(record).status_code in (401, 403)
        assert (
            a.put(f"/v2/key-value-stores/{store}", json={"generalAccess": "ANYONE_WITH_ID_CAN_READ"}).status_code == 200
        )
        assert anonymous.get(record).content == b"hi"
        assert anonymous.get(record).status_code == 200
        assert a.put(f"/v2/key-value-stores/{store}", json={"generalAccess": "RESTRICTED"}).status_code == 200
        assert anonymous.get(record).status_code in (401, 403)


def test_a_store_renamed_through_one_node_is_written_by_its_new_name_on_the_other(
    clients: tuple[httpx.Client, httpx.Client],
) -> None:
    a, b = clients
    first = new_store(a, "renamed-on-a")
    by_name = "/v2/key-value-stores/~renamed-on-a/records/k"
    for _ in range(3):  # B keeps its decision on the name
        assert b.put(by_name, content=b"first", headers=_BYTES).status_code == 201
    assert a.put(f"/v2/key-value-stores/{first}", json={"name": "renamed-away"}).status_code == 200
    assert b.put(by_name, content=b"nowhere", headers=_BYTES).status_code == 404
    second = new_store(a, "renamed-on-a")
    assert b.put(by_name, content=b"second", headers=_BYTES).status_code == 201
    assert a.get(f"/v2/key-value-stores/{second}/records/k").content == b"second"
    assert a.get(f"/v2/key-value-stores/{first}/records/k").content == b"first"
