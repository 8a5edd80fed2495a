"""Webhooks over real servers with a loopback receiver: a receiver that fails twice then
succeeds gets the same delivery three times (one success, three attempts logged), and a
server restart between attempts loses nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from backing_services import COMMAND_ENV, ScaleOut
from conftest import ServerProcess, free_port, start_scale_out_servers, start_server
from kvbox.client import verify_signature

from .conftest import create_user

pytestmark = pytest.mark.slow

SECRET = "e2e receiver secret"
ENV = {"KVBOX_WEBHOOK_ALLOW_PRIVATE": "true", "KVBOX_WEBHOOK_RETRY_DELAY": "1s"}


class Receiver:
    """A loopback HTTP receiver answering each POST with the next status of its script."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.got: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.got.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(receiver.script.pop(0) if receiver.script else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < n:
            assert time.monotonic() < deadline, f"{len(self.got)} deliveries arrived, expected {n}"
            time.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver([500, 502])
    yield r
    r.httpd.shutdown()
    r.httpd.server_close()


def restartable(kind: str, tmp_path: Path, scale_out: ScaleOut | None) -> tuple[ServerProcess, dict[str, str]]:
    if kind == "sqlite":
        return start_server(tmp_path / "data", workers=2, extra_env=ENV, port=free_port()), ENV
    assert scale_out is not None
    (srv,) = start_scale_out_servers(scale_out, tmp_path, nodes=1, workers=2, extra_env=ENV)
    return srv, {**ENV, **COMMAND_ENV[srv.data_dir]}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_failing_receiver_gets_one_delivery_three_times_across_a_restart(
    kind: str, receiver: Receiver, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    scale_out = request.getfixturevalue("scale_out") if kind == "postgres" else None
    srv, env = restartable(kind, tmp_path, scale_out)
    try:
        token = create_user(srv.data_dir, "hooks").token
        auth = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=srv.url, headers=auth, timeout=30) as c:
            store = c.post("/v2/key-value-stores", params={"name": "hooked"}, json={}).json()["data"]["id"]
            r = c.post(f"/v2/key-value-stores/{store}/webhooks", json={"requestUrl": receiver.url, "secret": SECRET})
            assert r.status_code == 201, r.text
            hook = r.json()["data"]["id"]
            assert c.put(f"/v2/key-value-stores/{store}/records/k", content=b"v").status_code in (200, 201)
        receiver.wait_for(1)
        # Restart between the first attempt (failed) and the retry: the delivery was persisted.
        port = int(srv.url.rsplit(":", 1)[1])
        srv.stop()
        srv = start_server(srv.data_dir, workers=2, extra_env=env, port=port)
        receiver.wait_for(3)
        time.sleep(0.5)
        assert len(receiver.got) == 3
        ids = {h["kvbox-delivery-id"] for h, _ in receiver.got}
        assert len(ids) == 1
        for h, body in receiver.got:
            assert h["kvbox-webhook-id"] == hook
            assert verify_signature(SECRET, h["kvbox-signature"], body)
        payload = json.loads(receiver.got[-1][1])
        assert (payload["eventType"], payload["eventData"]["key"], payload["resource"]["name"]) == (
            "RECORD.CREATED", "k", "hooked")  # fmt: skip
        with httpx.Client(base_url=srv.url, headers=auth, timeout=30) as c:
            deadline = time.monotonic() + 10
            while True:
                log = c.get(f"/v2/key-value-stores/{store}/webhooks/{hook}/deliveries").json()["data"]["items"]
                if (log and log[0]["status"] == "SUCCEEDED") or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        assert [(a["attempt"], a["status"], a["responseStatus"]) for a in log] == [
            (3, "SUCCEEDED", 204), (2, "FAILED", 502), (1, "FAILED", 500)]  # fmt: skip
        assert {a["deliveryId"] for a in log} == ids
    finally:
        srv.stop()
