"""`kvbox serve` as a real process: first start, health, multi-worker consistency, admin commands, limits."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import ADMIN_TOKEN, ServerProcess, free_port, start_server

from .conftest import UserInfo, auth, create_user, kvbox_cmd, last_line, new_connection_client, run_kvbox

pytestmark = pytest.mark.slow


def create_store(base_url: str, token: str, name: str | None = None) -> str:
    params = {"name": name} if name else {}
    r = httpx.post(f"{base_url}/v2/key-value-stores", params=params, headers=auth(token), json={}, timeout=10)
    assert r.status_code in (200, 201), r.text
    return str(r.json()["data"]["id"])


def wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"kvbox serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    os.killpg(proc.pid, 9)
    raise AssertionError(f"kvbox serve did not become healthy:\n{log.read_text()}")


def serve_without_admin_token(data_dir: Path, log: Path) -> ServerProcess:
    """`kvbox serve` with no KVBOX_* variables at all (in particular no KVBOX_ADMIN_TOKEN)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVBOX_")}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                *kvbox_cmd(),
                "serve",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_healthy(url, proc, log)
    return ServerProcess(url=url, data_dir=data_dir, proc=proc, admin_token="")


def printed_token(output: str) -> str | None:
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if "API token" in line and "shown only this once" in line:
            rest = [x.strip() for x in lines[i + 1 :] if x.strip()]
            return rest[0] if rest else None
    return None


def worker_cpu_ticks(main_pid: int) -> dict[int, int]:
    """utime+stime of each child process of the server's main process (its workers), from /proc."""
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == main_pid:  # ppid
            ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    return ticks


def test_first_start_prints_admin_token(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    log = tmp_path / "first.log"
    srv = serve_without_admin_token(data_dir, log)
    try:
        token = printed_token(log.read_text())
        assert token, log.read_text()
        assert token != ADMIN_TOKEN and len(token) >= 16
        r = httpx.get(f"{srv.url}/v2/key-value-stores", headers=auth(token), timeout=10)
        assert r.status_code == 200, r.text
        r = httpx.post(
            f"{srv.url}/v2/key-value-stores", params={"name": "first"}, headers=auth(token), json={}, timeout=10
        )
        assert r.status_code == 201 and r.json()["data"]["username"] == "admin"
        r = httpx.get(f"{srv.url}/v2/key-value-stores", headers=auth("wrong-token-0123456789"), timeout=10)
        assert r.status_code == 401 and r.json()["error"]["type"] == "invalid-token"
    finally:
        srv.stop()
    assert srv.proc.returncode is not None

    # A second start on the same data: no new admin, no token printed, the old token still works.
    log2 = tmp_path / "second.log"
    srv = serve_without_admin_token(data_dir, log2)
    try:
        assert printed_token(log2.read_text()) is None
        assert "API token" not in log2.read_text()
        r = httpx.get(f"{srv.url}/v2/key-value-stores", headers=auth(token), timeout=10)
        assert r.status_code == 200 and [s["name"] for s in r.json()["data"]["items"]] == ["first"]
    finally:
        srv.stop()
    users = json.loads(run_kvbox("users", "list", "--json", data_dir=data_dir).stdout)
    assert [u["username"] for u in users] == ["admin"]


def test_health(server: Any) -> None:
    r = httpx.get(f"{server.url}/health", timeout=10)
    assert r.status_code == 200
    assert r.json() == {"data": {"status": "ok"}}
    assert httpx.head(f"{server.url}/health", timeout=10).status_code == 200
    r = httpx.post(f"{server.url}/health", timeout=10)
    assert r.status_code == 405 and r.json()["error"]["type"] == "method-not-allowed"
    r = httpx.get(f"{server.url}/v2/no/such/route", timeout=10)
    assert r.status_code == 404 and "error" in r.json()


def test_strong_read_after_write_across_workers(server: Any, alice: UserInfo) -> None:
    store = create_store(server.url, alice.token)
    base = f"/v2/key-value-stores/{store}"
    before = worker_cpu_ticks(server.proc.pid)
    iterations, deadline = 0, time.monotonic() + 25
    with new_connection_client(server.url, alice.token) as http:
        for i in range(150):
            if time.monotonic() > deadline:
                break
            key, body = f"k-{i:04d}", f"value {i} ".encode() * (i % 7 + 1)
            r = http.put(f"{base}/records/{key}", content=body, headers={"Content-Type": "text/plain"})
            assert r.status_code == 201, r.text
            r = http.get(f"{base}/records/{key}")
            assert r.status_code == 200 and r.content == body, (i, r.status_code)
            r = http.get(f"{base}/keys", params={"prefix": key})
            assert [(it["key"], it["size"]) for it in r.json()["data"]["items"]] == [(key, len(body))], i

            # Overwrite one key each time: every read sees the newest version.
            r = http.put(f"{base}/records/same", content=f"v{i}".encode(), headers={"Content-Type": "text/plain"})
            assert r.status_code == 201
            assert http.get(f"{base}/records/same").text == f"v{i}", i
            assert http.head(f"{base}/records/same").status_code == 200

            if i % 10 == 9:
                assert http.delete(f"{base}/records/{key}").status_code == 204
                assert http.get(f"{base}/records/{key}").status_code == 404, i
                assert http.head(f"{base}/records/{key}").status_code == 404, i
            if i % 25 == 0:  # store metadata too
                name = f"raw-{i}"
                r = http.put(base, json={"name": name})
                assert r.status_code == 200 and r.json()["data"]["name"] == name
                assert http.get(f"/v2/key-value-stores/~{name}").json()["data"]["id"] == store
            iterations += 1
    assert iterations >= 30, "too few iterations to say anything"
    keys = httpx.get(f"{server.url}{base}/keys", headers=auth(alice.token), timeout=10).json()["data"]["items"]
    assert len(keys) == iterations - iterations // 10 + 1

    after = worker_cpu_ticks(server.proc.pid)
    busy = [pid for pid in after if after[pid] > before.get(pid, 0)]
    if len(before) >= 2:  # /proc readable and two workers found: both must have served requests
        assert len(busy) >= 2, (before, after)


def test_concurrent_writers_last_writer_wins(server: Any, alice: UserInfo) -> None:
    store = create_store(server.url, alice.token)
    url = f"{server.url}/v2/key-value-stores/{store}/records/contended"
    threads, per_thread = 6, 12

    def body_of(t: int, j: int) -> bytes:
        size = 100 * 1024 if (t + j) % 3 == 0 else 200 + 37 * j  # both inline and file-backed bodies
        seed = f"{t}:{j}:".encode()
        return (seed + hashlib.sha256(seed).hexdigest().encode() * (size // 64 + 1))[:size]

    expected = {f"application/x-w{t}-{j}": body_of(t, j) for t in range(threads) for j in range(per_thread)}
    spans: dict[str, tuple[float, float]] = {}
    errors: list[str] = []
    done = threading.Event()

    def writer(t: int) -> None:
        with httpx.Client(headers=auth(alice.token), timeout=20) as http:
            for j in range(per_thread):
                ctype = f"application/x-w{t}-{j}"
                start = time.monotonic()
                r = http.put(url, content=expected[ctype], headers={"Content-Type": ctype})
                end = time.monotonic()
                if r.status_code != 201:
                    errors.append(f"PUT {ctype}: {r.status_code} {r.text}")
                spans[ctype] = (start, end)

    def reader() -> None:
        with new_connection_client(server.url, alice.token) as http:
            for _ in range(400):
                if done.is_set():
                    return
                r = http.get(url)
                if r.status_code == 404:
                    continue
                ctype = r.headers.get("content-type", "")
                if expected.get(ctype) != r.content:
                    errors.append(f"torn read: content-type {ctype!r} with a body of {len(r.content)} bytes")

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for th in workers + readers:
        th.start()
    for th in workers:
        th.join(timeout=60)
    done.set()
    for th in readers:
        th.join(timeout=60)
    assert not errors, errors[:5]

    r = httpx.get(url, headers=auth(alice.token), timeout=10)
    final = r.headers["content-type"]
    assert r.content == expected[final], "the final value is a mix of writes"
    # Last writer wins: no write that started after the final one was acknowledged may be missing.
    acked_at = spans[final][1]
    later = [c for c, (start, _) in spans.items() if c != final and start > acked_at]
    assert not later, f"{final} survived writes that started after it completed: {later}"
    keys = httpx.get(f"{server.url}/v2/key-value-stores/{store}/keys", headers=auth(alice.token), timeout=10)
    assert keys.json()["data"]["items"][0]["size"] == len(expected[final])


def test_users_create_and_list(server: Any, alice: UserInfo, bob: UserInfo) -> None:
    listed = json.loads(run_kvbox("users", "list", "--json", data_dir=server.data_dir).stdout)
    names = {u["username"] for u in listed}
    assert {"admin", alice.username, bob.username} <= names
    row = next(u for u in listed if u["username"] == alice.username)
    assert len(row["id"]) == 17 and row["createdAt"].endswith("Z")

    table = run_kvbox("users", "list", data_dir=server.data_dir, env={"COLUMNS": "200"}).stdout
    assert alice.username in table and bob.username in table

    # A duplicate name is refused, with a message and a non-zero exit.
    dup = run_kvbox("users", "create", alice.username, data_dir=server.data_dir, check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr

    # A user created while the server runs can use the API at once.
    erin = create_user(server.data_dir, "erin")
    r = httpx.get(f"{server.url}/v2/key-value-stores", headers=auth(erin.token), timeout=10)
    assert r.status_code == 200 and r.json()["data"]["total"] == 0


def test_tokens_create_and_revoke(server: Any) -> None:
    user = create_user(server.data_dir, "tok")
    created = run_kvbox("tokens", "create", user.username, "--name", "second", data_dir=server.data_dir)
    second = last_line(created.stdout)
    match = re.search(r"Created token (\S+) for", created.stderr)
    assert match, created.stderr
    created = run_kvbox("tokens", "create", user.username, "--name", "third", data_dir=server.data_dir)
    third, third_id = last_line(created.stdout), re.search(r"Created token (\S+) for", created.stderr)
    assert third_id

    listing = run_kvbox("tokens", "list", user.username, data_dir=server.data_dir, env={"COLUMNS": "200"}).stdout
    assert "second" in listing and "third" in listing and second not in listing

    with new_connection_client(server.url) as http:

        def status(token: str) -> int:
            return http.get("/v2/key-value-stores", headers=auth(token)).status_code

        assert status(user.token) == status(second) == status(third) == 200

        revoked = run_kvbox("tokens", "revoke", second, data_dir=server.data_dir)
        assert "revoked" in revoked.stdout.lower()
        # Revocation applies at once, on every worker (new connection for each request).
        for _ in range(10):
            r = http.get("/v2/key-value-stores", headers=auth(second))
            assert r.status_code == 401 and r.json()["error"]["type"] == "invalid-token"
            assert status(user.token) == 200

        run_kvbox("tokens", "revoke", third_id.group(1), data_dir=server.data_dir)  # by token ID
        assert all(status(third) == 401 for _ in range(6))

    again = run_kvbox("tokens", "revoke", second, data_dir=server.data_dir, check=False)
    assert again.returncode != 0 and "No such token" in again.stderr
    unknown = run_kvbox("tokens", "create", "no-such-user-xyz", data_dir=server.data_dir, check=False)
    assert unknown.returncode != 0


def raw_request(url: str, head: str, *, timeout: float = 15) -> tuple[int, dict[str, str], bytes]:
    """Send only the request head over a raw socket and read one response; never send a body."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1"))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head_bytes, _, body = data.partition(b"\r\n\r\n")
        lines = head_bytes.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return status, headers, body


def test_413_before_the_body_is_read(server: Any, alice: UserInfo) -> None:
    store = create_store(server.url, alice.token)
    hostport = server.url.removeprefix("http://")
    for path, length in (
        (f"/v2/key-value-stores/{store}/records/huge", 10 * 1024**3),
        (f"/v2/key-value-stores/{store}/records/huge", 129 * 1024**2),  # just over the 128 MiB default
        ("/v2/key-value-stores?name=huge-json", 50 * 1024**2),
        (f"/v2/key-value-stores/{store}", 50 * 1024**2),
    ):
        method = "POST" if path.startswith("/v2/key-value-stores?") else "PUT"
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nAuthorization: Bearer {alice.token}\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n"
        )
        started = time.monotonic()
        status, headers, body = raw_request(server.url, head)
        assert status == 413, (path, status, body[:200])
        assert time.monotonic() - started < 10
        error = json.loads(body)["error"]
        assert error["type"] == "request-too-large"
        assert str(length) in error["message"]
        assert headers["content-type"].startswith("application/json")

    r = httpx.get(f"{server.url}/v2/key-value-stores/{store}/records/huge", headers=auth(alice.token), timeout=10)
    assert r.status_code == 404
    names = httpx.get(f"{server.url}/v2/key-value-stores", headers=auth(alice.token), timeout=10).json()
    assert "huge-json" not in [s["name"] for s in names["data"]["items"]]


def test_record_size_limit_with_streamed_bodies(tmp_path: Path) -> None:
    """With a small --max-record-size: a chunked body (no Content-Length) that grows past it gets 413."""
    srv = start_server(tmp_path / "data", workers=1, extra_env={"KVBOX_MAX_RECORD_SIZE": "256KiB"})
    try:
        store = create_store(srv.url, ADMIN_TOKEN)
        url = f"{srv.url}/v2/key-value-stores/{store}/records"
        limit = 256 * 1024

        def chunks(total: int) -> Any:
            for _ in range(total // 8192):
                yield b"x" * 8192

        with httpx.Client(headers=auth(ADMIN_TOKEN), timeout=20) as http:
            assert http.put(f"{url}/exact", content=b"y" * limit).status_code == 201
            r = http.put(f"{url}/over", content=b"y" * (limit + 1))
            assert r.status_code == 413 and r.json()["error"]["type"] == "request-too-large"
            try:
                r = http.put(f"{url}/streamed", content=chunks(4 * limit))
                assert r.status_code == 413
            except httpx.TransportError:
                pass  # the server may answer and close before the whole body was sent
            assert http.put(f"{url}/small-streamed", content=chunks(64 * 1024)).status_code == 201
            assert http.get(f"{url}/exact").content == b"y" * limit
            assert http.get(f"{url}/over").status_code == 404
            assert http.get(f"{url}/streamed").status_code == 404
            assert http.get(f"{url}/small-streamed").content == b"x" * (64 * 1024)
    finally:
        srv.stop()
