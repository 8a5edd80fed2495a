"""A backup taken while four writers keep writing restores every write acknowledged before it began."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import start_server
from e2e.conftest import auth, create_user, run_kvbox
from kvbox.backends.registry import open_backend

WRITERS = 4
MAX_WRITES = 3000  # per writer: the loop is bounded in count as well as in time
MAX_SECONDS = 60.0


def value(writer: int, n: int) -> bytes:
    """Every fourth write is a record file (100 KiB), the rest small; all recomputable."""
    seed = hashlib.sha256(f"{writer}-{n}".encode()).digest()
    return seed * (3200 if n % 4 == 0 else 4)


@dataclass
class Writer:
    number: int
    acked: list[tuple[float, int]] = field(default_factory=list)  # (when, n) of acknowledged writes
    error: BaseException | None = None


def write(url: str, token: str, store: str, w: Writer, stop: threading.Event) -> None:
    """Unique keys `w{i}-{n}`, and key `w{i}-hot` rewritten each time (its old record files are
    deleted while the backup runs)."""
    deadline = time.monotonic() + MAX_SECONDS
    try:
        with httpx.Client(base_url=url, headers=auth(token), timeout=30) as client:
            for n in range(MAX_WRITES):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                for key in (f"w{w.number}-{n:05d}", f"w{w.number}-hot"):
                    r = client.put(f"/v2/key-value-stores/{store}/records/{key}", content=value(w.number, n))
                    r.raise_for_status()
                w.acked.append((time.monotonic(), n))
    except BaseException as e:
        w.error = e


async def read_back(data_dir: Path, store: str, keys: list[str]) -> dict[str, bytes | None]:
    index, blobs = open_backend("sqlite", data_dir=data_dir, durable=False)
    try:
        found: dict[str, bytes | None] = {}
        for key in keys:
            row = await index.get_record(store, key)
            if row is None:
                found[key] = None
            elif row.blob_id is None:
                found[key] = row.inline
            else:
                found[key] = b"".join([chunk async for chunk in await blobs.open(row.blob_id)])
        return found
    finally:
        await index.close()
        await blobs.close()


@pytest.mark.slow
def test_backup_during_writes_restores_every_acknowledged_write(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", workers=2)
    writers = [Writer(i) for i in range(WRITERS)]
    stop = threading.Event()
    try:
        user = create_user(server.data_dir, "backup")
        r = httpx.post(f"{server.url}/v2/key-value-stores", params={"name": "busy"}, headers=auth(user.token))
        store = r.json()["data"]["id"]
        threads = [threading.Thread(target=write, args=(server.url, user.token, store, w, stop)) for w in writers]
        for thread in threads:
            thread.start()
        while min(len(w.acked) for w in writers) < 40 and all(t.is_alive() for t in threads):
            time.sleep(0.05)
        began = time.monotonic()
        done = run_kvbox("backup", str(tmp_path / "backup"), data_dir=server.data_dir)
        assert "Backed up" in done.stdout
        manifest = json.loads((tmp_path / "backup" / "kvbox-backup.json").read_text())
        # The servers deferred their deletions: the first snapshot's files were all there.
        assert (manifest["attempts"], manifest["missing"]) == (1, [])
        time.sleep(0.3)  # writers go on after the backup, too
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        assert all(w.error is None for w in writers), [w.error for w in writers]
        assert "No damage found." in run_kvbox("verify", data_dir=server.data_dir).stdout
    finally:
        stop.set()
        server.stop()
    restored = tmp_path / "restored"
    proc = run_kvbox("restore", str(tmp_path / "backup"), data_dir=restored)
    assert "No damage found." in proc.stdout

    before = {w.number: [n for when, n in w.acked if when < began] for w in writers}
    keys = [f"w{i}-{n:05d}" for i, ns in before.items() for n in ns] + [f"w{i}-hot" for i in before]
    found = asyncio.run(read_back(restored, store, keys))
    assert sum(len(ns) for ns in before.values()) >= WRITERS * 40
    for w in writers:
        ns = before[w.number]
        for n in ns:
            assert found[f"w{w.number}-{n:05d}"] == value(w.number, n), f"w{w.number}-{n:05d}"
        # The hot key holds the last write acknowledged before the backup began, or a later one.
        last_tried = w.acked[-1][1] + 1  # one more may have been in flight when the writers stopped
        assert found[f"w{w.number}-hot"] in {value(w.number, m) for m in range(ns[-1], last_tried + 1)}
