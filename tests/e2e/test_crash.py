"""Crash test: SIGKILL the server while writes are in flight; every acknowledged write survives intact.

Writers PUT (and sometimes overwrite or delete) records whose bodies verify themselves (a header with
key, version, length and SHA-256 of the payload). Each key belongs to one writer thread, so its
operations are sequential and at most the last one can be in flight when the server dies. After a
restart on the same data directory every key must be in a state at or after its last acknowledged
operation, byte-exact, and nothing may read back torn.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from conftest import ADMIN_TOKEN, start_server

from .conftest import auth

WRITERS = 4
MAX_OPS_PER_WRITER = 1500
RUN_SECONDS = 3.0  # write at least this long before the kill...
MIN_ACKED = 150  # ...and until this many writes were acknowledged (a loaded machine is slower),
MAX_RUN_SECONDS = 15.0  # but never longer than this.
LARGE = 64 * 1024


@dataclass(frozen=True)
class Put:
    body: bytes
    sent_size: int  # bytes on the wire (and in storage): differs from len(body) when gzip-encoded


@dataclass
class KeyHistory:
    """States a key went through, in order: None is "absent" (initially, and after a delete)."""

    states: list[Put | None] = field(default_factory=lambda: [None])
    acked: int = 0  # index in `states` of the last acknowledged operation

    def allowed(self) -> list[Put | None]:
        return self.states[self.acked :]


def make_body(key: str, version: int, size: int) -> bytes:
    payload = hashlib.shake_256(f"{key}/{version}".encode()).digest(size)
    header = f"KVBOX-CRASH {key} {version} {size} {hashlib.sha256(payload).hexdigest()}\n".encode()
    return header + payload


def verify_body(key: str, body: bytes) -> str | None:
    """None if the body is a complete, untorn record written for `key`; else what is wrong."""
    header, sep, payload = body.partition(b"\n")
    parts = header.decode("latin-1").split(" ")
    if not sep or len(parts) != 5 or parts[0] != "KVBOX-CRASH":
        return f"bad header {header[:80]!r}"
    _, k, _version, size, digest = parts
    if k != key:
        return f"body written for {k!r}"
    if len(payload) != int(size):
        return f"payload of {len(payload)} bytes, header says {size}"
    if hashlib.sha256(payload).hexdigest() != digest:
        return "payload hash mismatch"
    return None


class Writer(threading.Thread):
    def __init__(self, wid: int, base_url: str, store: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.wid = wid
        self.url = f"{base_url}/v2/key-value-stores/{store}/records"
        self.stop = stop
        self.rnd = random.Random(wid)
        self.keys: dict[str, KeyHistory] = {}
        self.acked_ops = 0
        self.unexpected: list[str] = []

    def next_op(self, n: int) -> tuple[str, Put | None, bytes, dict[str, str]]:
        existing = list(self.keys)
        roll = self.rnd.random()
        if existing and roll < 0.08:  # delete an earlier key
            return self.rnd.choice(existing), None, b"", {}
        key = self.rnd.choice(existing) if existing and roll < 0.25 else f"k-{self.wid}-{n:05d}"
        version = len(self.keys.get(key, KeyHistory()).states)
        size = self.rnd.randint(LARGE + 1, 300 * 1024) if self.rnd.random() < 0.3 else self.rnd.randint(1, 4000)
        body = make_body(key, version, size)
        headers = {"Content-Type": "application/octet-stream"}
        wire = body
        if self.rnd.random() < 0.2:
            wire = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        return key, Put(body=body, sent_size=len(wire)), wire, headers

    def run(self) -> None:
        with httpx.Client(headers=auth(ADMIN_TOKEN), timeout=httpx.Timeout(10, connect=2)) as http:
            for n in range(MAX_OPS_PER_WRITER):
                if self.stop.is_set():
                    return
                key, put, wire, headers = self.next_op(n)
                history = self.keys.setdefault(key, KeyHistory())
                history.states.append(put)  # recorded before sending: it may land even if never acked
                try:
                    if put is None:
                        r = http.delete(f"{self.url}/{key}")
                    else:
                        r = http.put(f"{self.url}/{key}", content=wire, headers=headers)
                except httpx.HTTPError:
                    return  # the server is gone: this operation was not acknowledged
                if r.status_code not in (201, 204):
                    self.unexpected.append(f"{key}: {r.status_code} {r.text[:200]}")
                    return
                history.acked = len(history.states) - 1
                self.acked_ops += 1


def list_all_keys(http: httpx.Client, store: str) -> dict[str, int]:
    sizes: dict[str, int] = {}
    start: str | None = None
    for _ in range(100):
        params = {"exclusiveStartKey": start} if start else {}
        data = http.get(f"/v2/key-value-stores/{store}/keys", params=params).json()["data"]
        sizes.update({item["key"]: item["size"] for item in data["items"]})
        if not data["isTruncated"]:
            return sizes
        start = data["nextExclusiveStartKey"]
    raise AssertionError("key listing did not end")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_acknowledged_writes_survive_sigkill(tmp_path: Path, workers: int) -> None:
    data_dir = tmp_path / "data"
    srv = start_server(data_dir, workers=workers)
    try:
        r = httpx.post(
            f"{srv.url}/v2/key-value-stores", params={"name": "crash"}, headers=auth(ADMIN_TOKEN), json={}, timeout=10
        )
        assert r.status_code == 201, r.text
        store = r.json()["data"]["id"]

        stop = threading.Event()
        writers = [Writer(w, srv.url, store, stop) for w in range(WRITERS)]
        for w in writers:
            w.start()
        started = time.monotonic()
        while time.monotonic() - started < MAX_RUN_SECONDS:
            time.sleep(0.1)
            elapsed = time.monotonic() - started
            if elapsed >= RUN_SECONDS and sum(w.acked_ops for w in writers) >= MIN_ACKED:
                break
        assert all(w.is_alive() for w in writers), "writers finished before the kill: raise MAX_OPS_PER_WRITER"
        srv.stop(signal.SIGKILL)  # the whole process group, mid-write
        stop.set()
        for w in writers:
            w.join(timeout=30)
            assert not w.is_alive()
    finally:
        if srv.proc.poll() is None:
            os.killpg(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(timeout=15)

    assert [u for w in writers for u in w.unexpected] == []
    acked = sum(w.acked_ops for w in writers)
    assert acked >= 20, f"only {acked} acknowledged writes: the test says little"

    srv = start_server(data_dir, workers=workers)
    try:
        problems: list[str] = []
        with httpx.Client(base_url=srv.url, headers=auth(ADMIN_TOKEN), timeout=20) as http:
            present: dict[str, Put] = {}
            for w in writers:
                for key, history in w.keys.items():
                    r = http.get(f"/v2/key-value-stores/{store}/records/{key}")
                    if r.status_code == 404:
                        if None not in history.allowed():
                            problems.append(f"{key}: acknowledged record is missing")
                        continue
                    if r.status_code != 200:
                        problems.append(f"{key}: GET {r.status_code} {r.text[:200]}")
                        continue
                    torn = verify_body(key, r.content)
                    if torn:
                        problems.append(f"{key}: torn record ({torn})")
                        continue
                    match = next((p for p in history.allowed() if p is not None and p.body == r.content), None)
                    if match is None:
                        problems.append(f"{key}: reads back an older or unknown version")
                        continue
                    present[key] = match
            listed = list_all_keys(http, store)
            assert set(listed) == set(present), "listing and reads disagree"
            for key, put in present.items():
                if listed[key] != put.sent_size:
                    problems.append(f"{key}: listed size {listed[key]}, stored {put.sent_size}")

            # The restarted server takes writes again.
            r = http.put(f"/v2/key-value-stores/{store}/records/after-restart", content=b"ok")
            assert r.status_code == 201
            assert http.get(f"/v2/key-value-stores/{store}/records/after-restart").content == b"ok"
        assert not problems, f"{len(problems)} problems (of {sum(len(w.keys) for w in writers)} keys): {problems[:10]}"
    finally:
        srv.stop()
