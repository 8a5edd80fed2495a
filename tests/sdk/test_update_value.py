"""`update_value` (read, change, write with nothing in between) and range reads in the SDK,
in local mode (a folder lock shared by processes) and in remote mode (compare-and-set)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from kvbox.client import PreconditionFailedError
from kvbox.core.errors import RecordNotFoundError
from kvbox.sdk import Configuration, KeyValueStore, KeyValueStoreSync

from .conftest import unique_name

pytestmark = pytest.mark.anyio

BODY = bytes(range(256)) * 1200  # 300 KiB: several chunks, a blob on the server


def increment(value: Any) -> Any:
    return {"n": value["n"] + 1}


async def test_update_value_reads_changes_and_writes(kvs: KeyValueStore) -> None:
    assert await kvs.update_value("counter", increment, default_value={"n": 0}) == {"n": 1}
    assert await kvs.update_value("counter", increment) == {"n": 2}
    assert await kvs.get_value("counter") == {"n": 2}
    text = await kvs.update_value("note", lambda v: (v or "") + "!", content_type="text/plain")
    assert text == "!" and await kvs.get_value("note") == "!"
    assert await kvs.update_value("counter", lambda v: None) is None  # None deletes
    assert await kvs.get_value("counter") is None
    assert await kvs.update_value("never", lambda v: None) is None  # deleting nothing is fine


async def test_concurrent_updates_are_never_lost(kvs: KeyValueStore) -> None:
    async def writer() -> None:
        for _ in range(10):
            await kvs.update_value("counter", increment, default_value={"n": 0}, retries=200)

    await asyncio.gather(*(writer() for _ in range(4)))
    assert await kvs.get_value("counter") == {"n": 40}


def test_threads_updating_one_record(kvs_sync: KeyValueStoreSync) -> None:
    def writer() -> None:
        for _ in range(10):
            kvs_sync.update_value("counter", increment, default_value={"n": 0}, retries=200)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert kvs_sync.get_value("counter") == {"n": 40}


async def test_ranges_and_streams(kvs: KeyValueStore) -> None:
    await kvs.set_value("video", BODY, content_type="video/mp4")
    assert await kvs.get_record_range("video", 1000, 24) == BODY[1000:1024]
    assert await kvs.get_record_range("video", len(BODY) - 5) == BODY[-5:]
    assert await kvs.get_record_range("video", len(BODY)) == b""  # past the end: nothing, as a slice
    assert await kvs.get_record_range("video", 7, 0) == b""
    assert await kvs.get_record_range("missing", 0, 10) is None
    chunks = [c async for c in kvs.stream("video", offset=10_000)]
    assert b"".join(chunks) == BODY[10_000:] and len(chunks) > 1
    with pytest.raises(RecordNotFoundError):
        [c async for c in kvs.stream("missing")]
    with pytest.raises(ValueError):
        await kvs.get_record_range("video", 0, -1)
    await kvs.set_value("text", "x" * 5000)  # compressed on the way to a server: offsets count the content
    assert await kvs.get_record_range("text", 4990) == b"x" * 10


def test_ranges_in_the_sync_twin(kvs_sync: KeyValueStoreSync) -> None:
    kvs_sync.set_value("video", BODY, content_type="video/mp4")
    assert kvs_sync.get_record_range("video", 5, 5) == BODY[5:10]
    assert b"".join(kvs_sync.stream("video", offset=len(BODY) - 3)) == BODY[-3:]
    assert kvs_sync.get_record_range("missing", 0) is None


async def test_remote_update_gives_up_after_its_retries(server: Any, sdk_token: str) -> None:
    config = Configuration(remote=True, api_url=server.url, token=sdk_token)
    store = await KeyValueStore.open(name=unique_name(), configuration=config)
    other = KeyValueStoreSync.open(id=store.id, configuration=config)
    calls = 0

    def meddle(value: Any) -> Any:  # another writer gets in between every read and write
        nonlocal calls
        calls += 1
        other.set_value("k", {"n": -calls})
        return {"n": value["n"] + 1}

    try:
        await store.set_value("k", {"n": 0})
        with pytest.raises(PreconditionFailedError):
            await store.update_value("k", meddle, retries=2)
        assert calls == 3
        assert await store.get_value("k") == {"n": -3}
    finally:
        await store.drop()
        await KeyValueStore.close_all()
        KeyValueStoreSync.close_all()


UPDATER = r"""
import sys
from kvbox.sdk import Configuration, KeyValueStoreSync
storage, rounds = sys.argv[1], int(sys.argv[2])
kvs = KeyValueStoreSync.open(name="shared", configuration=Configuration(storage_dir=storage))
for _ in range(rounds):
    kvs.update_value("counter", lambda v: {"n": v["n"] + 1}, default_value={"n": 0})
    kvs.set_value("noise", {"other": "writes"})  # plain writes take the lock too
KeyValueStoreSync.close_all()
"""


def test_processes_updating_one_local_folder_lose_nothing(tmp_path: Path) -> None:
    storage = str(tmp_path / "storage")
    processes, rounds = 4, 40
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    running = [
        subprocess.Popen([sys.executable, "-c", UPDATER, storage, str(rounds)], env=env) for _ in range(processes)
    ]
    for proc in running:
        assert proc.wait(timeout=120) == 0
    kvs = KeyValueStoreSync.open(name="shared", configuration=Configuration(storage_dir=storage))
    try:
        assert kvs.get_value("counter") == {"n": processes * rounds}
    finally:
        KeyValueStoreSync.close_all()


async def test_the_last_bytes(kvs: KeyValueStore) -> None:
    await kvs.set_value("video", BODY, content_type="video/mp4")
    assert await kvs.get_record_range("video", -7) == BODY[-7:]
    assert await kvs.get_record_range("video", -(len(BODY) + 1)) == BODY
    with pytest.raises(ValueError):
        await kvs.get_record_range("video", -7, 3)
