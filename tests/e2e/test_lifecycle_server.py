"""The record lifecycle on real server processes: rules seen at once by every worker, and a
delete by prefix and the sweeper finishing their work after a SIGKILL."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from conftest import ADMIN_TOKEN, ServerProcess, start_server

from .conftest import auth, new_connection_client

BODY = b"x" * 2048  # above the inline threshold below: every record is a file
SMALL = {"KVBOX_INLINE_THRESHOLD": "1024", "KVBOX_SWEEP_INTERVAL": "1"}


def blob_files(data_dir: Path) -> int:
    root = data_dir / "blobs"
    return sum(1 for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp")


def store_data(srv: ServerProcess, store_id: str) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/v2/key-value-stores/{store_id}", headers=auth(ADMIN_TOKEN), timeout=10)
    r.raise_for_status()
    data: dict[str, Any] = r.json()["data"]
    return data


def test_a_rule_change_is_seen_at_once_by_every_worker(server: ServerProcess) -> None:
    with new_connection_client(server.url, ADMIN_TOKEN) as http:
        store = http.post("/v2/key-value-stores", params={"name": "workers-rules"}, json={}).json()["data"]["id"]
        http.put(f"/v2/key-value-stores/{store}/records/old", content=b"v").raise_for_status()
        for _ in range(6):  # each on a new connection: both workers read (and cache) it
            assert http.get(f"/v2/key-value-stores/{store}/records/old").status_code == 200
        time.sleep(1.1)
        r = http.put(f"/v2/key-value-stores/{store}", json={"recordExpiry": [{"prefix": "", "expireAfterSecs": 1}]})
        assert r.status_code == 200
        for _ in range(6):
            assert http.get(f"/v2/key-value-stores/{store}/records/old").status_code == 404
        http.put(f"/v2/key-value-stores/{store}", json={"recordExpiry": []}).raise_for_status()
        for _ in range(6):
            assert http.get(f"/v2/key-value-stores/{store}/records/old").status_code == 404


def test_delete_by_prefix_and_sweeps_finish_after_sigkill(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    srv = start_server(data_dir, workers=2, extra_env=SMALL)
    try:
        headers = auth(ADMIN_TOKEN)
        r = httpx.post(f"{srv.url}/v2/key-value-stores", params={"name": "crash"}, headers=headers, json={}, timeout=10)
        store = r.json()["data"]["id"]
        url = f"{srv.url}/v2/key-value-stores/{store}/records"

        def put(key: str, params: dict[str, str] | None = None) -> None:
            httpx.put(f"{url}/{key}", content=BODY, params=params, headers=headers, timeout=30).raise_for_status()

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(put, [f"tmp-{i:04d}" for i in range(600)]))
            list(pool.map(lambda k: put(k, {"expiresIn": "2"}), [f"exp-{i:04d}" for i in range(300)]))
            list(pool.map(put, [f"keep-{i:02d}" for i in range(20)]))
        expiring_written = time.monotonic()
        r = httpx.delete(url, params={"prefix": "tmp-"}, headers=headers, timeout=30)
        assert r.json() == {"data": {"deletedCount": 600}}
        # Let the expired records' sweep start, then kill every process mid-way.
        time.sleep(max(0.0, expiring_written + 2.3 - time.monotonic()))
        srv.stop(signal.SIGKILL)
    finally:
        if srv.proc.poll() is None:
            os.killpg(srv.proc.pid, signal.SIGKILL)
            srv.proc.wait(timeout=15)

    again = start_server(data_dir, workers=2, extra_env=SMALL)
    try:
        deadline = time.monotonic() + 60
        while True:
            data = store_data(again, store)
            done = (data["recordCount"], data["stats"]["storageBytes"], blob_files(data_dir))
            if done == (20, 20 * len(BODY), 20):
                break
            assert time.monotonic() < deadline, f"after the restart: {done}"
            time.sleep(0.3)
        r = httpx.get(f"{again.url}/v2/key-value-stores/{store}/keys", headers=auth(ADMIN_TOKEN), timeout=10)
        assert [i["key"] for i in r.json()["data"]["items"]] == [f"keep-{i:02d}" for i in range(20)]
    finally:
        again.stop()
