"""`kvbox get` and `kvbox pull` as real processes, through a proxy that cuts connections in
the middle of a download: they go on where the download broke (a range read pinned to the
record's ETag) instead of starting over, and start over only when the record changed."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ServerProcess

from .conftest import UserInfo, auth, create_user, kvbox_cmd

pytestmark = pytest.mark.slow

MiB = 1 << 20
BODY = os.urandom(3 * MiB)  # incompressible: stored and sent as it is
DOC = json.dumps([{"row": i, "id": os.urandom(12).hex()} for i in range(60_000)]).encode()  # stored gzip-compressed
CUT = 512 * 1024  # response bytes a cut connection carries


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of the server. Its first `cuts` connections are closed
    once `CUT` response bytes went through them; `on_cut` runs just before. It keeps every
    request head it saw and counts the response bytes it forwarded."""

    def __init__(self, upstream: str, cuts: int, on_cut: Callable[[], None] | None = None) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self._upstream = (host, int(port))
        self._cuts = cuts
        self._on_cut = on_cut
        self._lock = threading.Lock()
        self.requests: list[str] = []
        self.forwarded = 0
        self._open: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        _close(self._listener)  # a shutdown wakes the thread waiting in accept()
        with self._lock:
            for sock in self._open:
                _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                cut = self._cuts > 0
                self._cuts -= 1
            server = socket.create_connection(self._upstream)
            with self._lock:
                self._open += [client, server]
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()
            threading.Thread(target=self._responses, args=(server, client, cut), daemon=True).start()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        while data := _recv(client):
            with self._lock:
                self.requests.append(data.decode("latin-1"))
            if not _send(server, data):
                break
        _close(server)

    def _responses(self, server: socket.socket, client: socket.socket, cut: bool) -> None:
        sent = 0
        while data := _recv(server):
            if cut and sent + len(data) > CUT:
                _send(client, data[: CUT - sent])
                with self._lock:
                    self.forwarded += CUT - sent
                if self._on_cut is not None:
                    self._on_cut()
                break
            # The client may hang up first (it stops reading a body it no longer wants).
            if not _send(client, data):
                break
            sent += len(data)
            with self._lock:
                self.forwarded += len(data)
        _close(client)
        _close(server)

    def ranges(self) -> list[str]:
        """The `Range` headers of the requests seen, in order."""
        found = []
        for head in self.requests:
            for line in head.split("\r\n"):
                if line.lower().startswith("range:"):
                    found.append(line.split(":", 1)[1].strip())
        return found


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(256 * 1024)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture(scope="module")
def user(server: ServerProcess) -> UserInfo:
    return create_user(server.data_dir, "resume")


@pytest.fixture
def store(server: ServerProcess, user: UserInfo) -> Iterator[str]:
    r = httpx.post(f"{server.url}/v2/key-value-stores", headers=auth(user.token), json={}, timeout=10)
    store_id = str(r.json()["data"]["id"])
    put(server, user, store_id, "video", BODY, {"content-type": "video/mp4"})
    put(server, user, store_id, "doc", gzip.compress(DOC), {"content-type": "application/json",
                                                            "content-encoding": "gzip"})  # fmt: skip
    yield store_id
    httpx.delete(f"{server.url}/v2/key-value-stores/{store_id}", headers=auth(user.token), timeout=10)


def put(server: ServerProcess, user: UserInfo, store_id: str, key: str, body: bytes, headers: dict[str, str]) -> None:
    r = httpx.put(f"{server.url}/v2/key-value-stores/{store_id}/records/{key}", content=body,
                  headers={**auth(user.token), **headers}, timeout=30)  # fmt: skip
    assert r.status_code == 201, r.text


def kvbox(proxy: CuttingProxy, user: UserInfo, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVBOX_")}
    env.update({"KVBOX_API_URL": proxy.url, "KVBOX_TOKEN": user.token})
    done = subprocess.run([*kvbox_cmd(), *args], capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 0, done.stderr
    return done


def test_get_resumes_a_dropped_download(server: ServerProcess, user: UserInfo, store: str, tmp_path: Path) -> None:
    proxy = CuttingProxy(server.url, cuts=2)
    try:
        kvbox(proxy, user, "get", store, "video", "-o", str(tmp_path / "video.mp4"))
    finally:
        proxy.close()
    assert (tmp_path / "video.mp4").read_bytes() == BODY
    offsets = [int(r.removeprefix("bytes=").rstrip("-")) for r in proxy.ranges()]
    assert len(offsets) == 2 and 0 < offsets[0] < offsets[1] < len(BODY)  # went on, twice
    assert proxy.forwarded < len(BODY) + 2 * CUT  # and never started over


def test_a_range_resumes_within_its_bounds(server: ServerProcess, user: UserInfo, store: str, tmp_path: Path) -> None:
    proxy = CuttingProxy(server.url, cuts=1)
    try:
        kvbox(proxy, user, "get", store, "video", "--range", f"{MiB}-{3 * MiB - 2}", "-o", str(tmp_path / "part"))
    finally:
        proxy.close()
    assert (tmp_path / "part").read_bytes() == BODY[MiB : 3 * MiB - 1]
    first, resumed = proxy.ranges()
    assert first == f"bytes={MiB}-{3 * MiB - 2}"
    start, end = resumed.removeprefix("bytes=").split("-")
    assert MiB < int(start) and int(end) == 3 * MiB - 2


def test_a_compressed_record_resumes_in_its_content(
    server: ServerProcess, user: UserInfo, store: str, tmp_path: Path
) -> None:
    """Sent compressed first; the rest comes decoded from the server and the client skips to the
    offset in the content: the file is the content, whole."""
    proxy = CuttingProxy(server.url, cuts=1)
    try:
        kvbox(proxy, user, "get", store, "doc", "-o", str(tmp_path / "doc.json"))
    finally:
        proxy.close()
    assert (tmp_path / "doc.json").read_bytes() == DOC
    assert len(proxy.ranges()) == 1


def test_a_record_written_meanwhile_is_downloaded_again(
    server: ServerProcess, user: UserInfo, store: str, tmp_path: Path
) -> None:
    newer = os.urandom(2 * MiB)
    proxy = CuttingProxy(server.url, cuts=1, on_cut=lambda: put(server, user, store, "video", newer, {}))
    try:
        kvbox(proxy, user, "get", store, "video", "-o", str(tmp_path / "video.mp4"))
    finally:
        proxy.close()
    assert (tmp_path / "video.mp4").read_bytes() == newer  # never a mix of two versions


def test_pull_resumes_a_dropped_download(server: ServerProcess, user: UserInfo, store: str, tmp_path: Path) -> None:
    proxy = CuttingProxy(server.url, cuts=3)
    try:
        kvbox(proxy, user, "pull", store, str(tmp_path / "folder"), "--jobs", "1")
    finally:
        proxy.close()
    assert (tmp_path / "folder" / "video.mp4").read_bytes() == BODY
    assert (tmp_path / "folder" / "doc.json").read_bytes() == DOC
    assert proxy.ranges()  # at least one download went on where it broke
