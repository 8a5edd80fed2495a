"""Operations on real `kvbox serve` processes: metrics summed over workers, access logs, graceful
shutdown on SIGTERM, and readiness while PostgreSQL goes away and comes back."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backing_services import PostgresServer, ScaleOut, kvbox_migrate, scale_out_env
from conftest import ADMIN_TOKEN, ServerProcess, start_server
from e2e.conftest import auth, new_connection_client, run_kvbox

METRICS_TOKEN = "metrics-token-0123456789"


def until(condition: Callable[[], bool], *, seconds: float, what: str) -> float:
    """Poll `condition` until it holds (bounded); return how long it took."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if condition():
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds} s")


def requests_counted(url: str, route: str, status: str = "200") -> float:
    r = httpx.get(f"{url}/metrics", headers=auth(METRICS_TOKEN), timeout=5)
    r.raise_for_status()
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            if s.name == "kvbox_http_requests_total" and s.labels == {
                "route": route,
                "method": "GET",
                "status": status,
            }:
                return float(s.value)
    return 0.0


@pytest.mark.slow
def test_metrics_are_counted_per_worker_and_summed(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", workers=2, extra_env={"KVBOX_METRICS_TOKEN": METRICS_TOKEN})
    try:
        with new_connection_client(server.url, ADMIN_TOKEN) as client:
            for _ in range(40):
                assert client.get("/v2/users/me").status_code == 200
        until(lambda: requests_counted(server.url, "/v2/users/me") == 40, seconds=10, what="40 requests summed")
        # Each worker publishes its own share (the answering worker adds its live counts, so
        # the files may lag a moment); the shares add up to the sum.
        (run,) = (server.data_dir / "metrics").iterdir()

        def shares() -> list[float]:
            found = []
            for path in sorted(run.glob("*.json")):
                values = json.loads(path.read_text())["values"]["kvbox_http_requests_total"]
                for route, method, status, count in values:
                    if (route, method, status) == ("/v2/users/me", "GET", "200"):
                        found.append(count)
            return found

        until(lambda: sum(shares()) == 40, seconds=10, what="the published shares")
        assert len(shares()) >= 1
        assert httpx.get(f"{server.url}/metrics", timeout=5).status_code == 401
    finally:
        server.stop()


@pytest.mark.slow
def test_access_log_lines_carry_the_request_id(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data", workers=1)
    try:
        r = httpx.get(f"{server.url}/v2/users/me", headers={**auth(ADMIN_TOKEN), "X-Request-Id": "trace-42"})
        assert r.headers["x-request-id"] == "trace-42"
        log = tmp_path / f"server-{server.url.rsplit(':', 1)[1]}.log"

        def logged() -> list[dict[str, object]]:
            lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
            return [entry for entry in map(json.loads, lines) if entry.get("request_id") == "trace-42"]

        until(lambda: bool(logged()), seconds=5, what="the access line")
        (entry,) = logged()
        assert (entry["route"], entry["status"], entry["user"]) == ("/v2/users/me", 200, "admin")
        # granian's own lines are JSON too (standard output is not a terminal here).
        assert any('"logger":"_granian"' in line for line in log.read_text().splitlines())
    finally:
        server.stop()


def slow_upload(url: str, key: str, total: int, *, finish_after: float | None) -> Callable[[], bytes]:
    """Start a PUT of `total` bytes, sending 1000 now and the rest after `finish_after` seconds
    (never when None); returns a function that waits for the response."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    head = (
        f"PUT /v2/key-value-stores/~slow/records/{key} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
        f"{ADMIN_TOKEN}\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + b"a" * 1000)
    answer: list[bytes] = []

    def finish() -> None:
        try:
            if finish_after is not None:
                time.sleep(finish_after)
                sock.sendall(b"a" * (total - 1000))
            sock.settimeout(15)
            answer.append(sock.recv(4096))
        except OSError:
            answer.append(b"")
        finally:
            sock.close()

    thread = threading.Thread(target=finish)
    thread.start()

    def response() -> bytes:
        thread.join(timeout=30)
        return answer[0] if answer else b""

    return response


@pytest.mark.slow
def test_sigterm_lets_requests_finish_within_the_timeout_and_leaves_no_partial_record(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data, workers=1, extra_env={"KVBOX_SHUTDOWN_TIMEOUT": "2"})
    try:
        httpx.post(f"{server.url}/v2/key-value-stores", params={"name": "slow"}, headers=auth(ADMIN_TOKEN))
        finishing = slow_upload(server.url, "finishes", 5000, finish_after=0.8)
        stuck = slow_upload(server.url, "cut-off", 500_000, finish_after=None)
        time.sleep(0.3)
        began = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=15)
        took = time.monotonic() - began
        assert finishing().startswith(b"HTTP/1.1 201"), "a request in flight finishes during the drain"
        assert not stuck().startswith(b"HTTP/1.1 2")
        assert code == 0
        assert 0.8 < took < 2 + 3, took  # the drain waited for the first upload, and no longer than the timeout
    finally:
        server.stop()
    again = start_server(data, workers=1)
    try:
        with httpx.Client(base_url=again.url, headers=auth(ADMIN_TOKEN)) as client:
            assert client.get("/v2/key-value-stores/~slow/records/finishes").content == b"a" * 5000
            assert client.get("/v2/key-value-stores/~slow/records/cut-off").status_code == 404
            keys = client.get("/v2/key-value-stores/~slow/keys").json()["data"]["items"]
            assert [k["key"] for k in keys] == ["finishes"]
    finally:
        again.stop()
    assert "No damage found." in run_kvbox("verify", "--orphan-min-age", "0s", data_dir=data).stdout


@pytest.mark.slow
def test_readiness_follows_postgresql_down_and_back(scale_out: ScaleOut, tmp_path: Path) -> None:
    pg = PostgresServer().start()  # a server of its own: this test stops it
    node: ServerProcess | None = None
    try:
        env = scale_out_env(pg.create_database(), scale_out.blob_url(), scale_out.s3.endpoint)
        kvbox_migrate(env)
        (tmp_path / "node").mkdir()
        node = start_server(tmp_path / "node" / "data", workers=1, extra_env=env)
        ready = f"{node.url}/health/ready"
        assert httpx.get(ready, timeout=10).status_code == 200
        pg.halt()
        took = until(lambda: httpx.get(ready, timeout=10).status_code == 503, seconds=10, what="503 once PG is down")
        assert took < 5
        r = httpx.get(ready, timeout=10)
        assert "index" in r.json()["error"]["message"]
        assert r.json()["error"]["data"]["checks"]["blobStore"] == "ok"
        assert httpx.get(f"{node.url}/health", timeout=10).status_code == 200
        pg.resume()
        until(lambda: httpx.get(ready, timeout=10).status_code == 200, seconds=40, what="200 once PG is back")
        assert httpx.get(f"{node.url}/v2/users/me", headers=auth(ADMIN_TOKEN), timeout=10).status_code == 200
    finally:
        if node is not None:
            node.stop()
        pg.stop()


def test_serve_refuses_a_shutdown_timeout_out_of_range(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kvbox.cli", "serve", "--data-dir", str(tmp_path), "--shutdown-timeout", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "between 1 and 1800" in proc.stderr
