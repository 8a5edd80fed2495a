"""Compare-and-set across processes: N writers each make M increments of one counter record
through the kvbox client (read with its ETag, write with If-Match, read again on 412), against
`kvbox serve --workers 2` on SQLite and against two scale-out nodes sharing PostgreSQL and S3.
No increment is lost or applied twice: the final value is exactly N x M."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import pytest

from backing_services import ScaleOut
from conftest import ServerProcess, start_scale_out_servers
from kvbox.client import KvboxClient, PreconditionFailedError

from .conftest import create_user

pytestmark = pytest.mark.slow

WRITERS = 6
INCREMENTS = 12
ATTEMPTS = 2000  # per writer; a bound, never reached in practice


@pytest.fixture(scope="module")
def nodes(scale_out: ScaleOut, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ServerProcess]]:
    servers = start_scale_out_servers(scale_out, tmp_path_factory.mktemp("cas-nodes"), nodes=2, workers=1)
    try:
        yield servers
    finally:
        for srv in servers:
            srv.stop()


def increment_concurrently(urls: list[str], token: str, *, key: str, body: bytes = b"") -> tuple[int, int]:
    """Run the writers, spread over `urls` (each writer on its own connections); returns the
    final count and how many conflicts (412) the writers met."""
    with KvboxClient(token, api_url=urls[0]) as setup:
        store = setup.key_value_stores().get_or_create().id
        setup.key_value_store(store).set_record(key, {"n": 0, "pad": body.decode()})
    conflicts = [0] * WRITERS
    failures: list[BaseException] = []

    def writer(w: int) -> None:
        try:
            with KvboxClient(token, api_url=urls[w % len(urls)], max_retries=4, min_delay_between_retries=0.05) as c:
                records = c.key_value_store(store)
                done = 0
                for _ in range(ATTEMPTS):
                    record = records.get_record(key)
                    assert record is not None and record.etag
                    value = {**record.value, "n": record.value["n"] + 1}
                    try:
                        records.set_record(key, value, if_match=record.etag)
                    except PreconditionFailedError:
                        conflicts[w] += 1
                        continue
                    done += 1
                    if done == INCREMENTS:
                        return
                raise AssertionError(f"writer {w} made {done} increments in {ATTEMPTS} attempts")
        except BaseException as err:
            failures.append(err)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not failures, failures
    with KvboxClient(token, api_url=urls[-1]) as check:
        final = check.key_value_store(store).get_record(key)
        assert final is not None
        check.key_value_store(store).delete()
    return int(final.value["n"]), sum(conflicts)


@pytest.mark.parametrize("size", ["inline", "blob"])
def test_two_workers_lose_no_increment(server: ServerProcess, size: str) -> None:
    token = create_user(server.data_dir, "cas").token
    pad = b"x" * (100_000 if size == "blob" else 10)  # a blob: the replaced body is deleted on each win
    count, conflicts = increment_concurrently([server.url], token, key="counter", body=pad)
    assert count == WRITERS * INCREMENTS
    assert conflicts > 0  # the writers did race


def test_two_scale_out_nodes_lose_no_increment(nodes: list[ServerProcess]) -> None:
    token = create_user(nodes[0].data_dir, "cas").token
    count, conflicts = increment_concurrently([n.url for n in nodes], token, key="counter")
    assert count == WRITERS * INCREMENTS
    assert conflicts > 0


def test_create_only_has_one_winner(server: ServerProcess) -> None:
    """Writers racing to create the same record with If-None-Match: * -- exactly one wins."""
    token = create_user(server.data_dir, "cas").token
    with KvboxClient(token, api_url=server.url) as setup:
        store = setup.key_value_stores().get_or_create().id
    wins: list[int] = []
    barrier = threading.Barrier(WRITERS)

    def writer(w: int) -> None:
        with KvboxClient(token, api_url=server.url) as c:
            barrier.wait(timeout=30)
            try:
                c.key_value_store(store).set_record("leader", json.dumps({"w": w}), "application/json",
                                                    if_none_match="*")  # fmt: skip
                wins.append(w)
            except PreconditionFailedError:
                pass

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(wins) == 1
    with KvboxClient(token, api_url=server.url) as check:
        leader = check.key_value_store(store).get_record("leader")
        assert leader is not None and leader.value == {"w": wins[0]}
