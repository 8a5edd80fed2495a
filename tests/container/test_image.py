"""The container image (`make image`), built and run with podman: the official client's round
trip, a restart on the same volume, a non-root user, the health check, SIGTERM within the
shutdown timeout, and the scale-out settings against the test PostgreSQL + S3.

Building needs podman, runc and mmdebstrap (`scripts/ensure-system-packages.sh` installs
them); when they are missing the test fails, it never skips.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apify_client import ApifyClient

from backing_services import ScaleOut, free_port, kvbox_migrate

pytestmark = [pytest.mark.container, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "scripts" / "containers.conf"
TOKEN = "container-admin-token-0123456789"
SHUTDOWN_TIMEOUT_S = 3


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", *args], env={**os.environ, "CONTAINERS_CONF": str(CONF)}, capture_output=True, text=True,
        timeout=timeout, check=False,
    )  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """`make image`'s script: the image from this checkout, tagged for the tests."""
    tag = f"localhost/kvbox-test:{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [str(ROOT / "scripts" / "image.sh"), tag], env={**os.environ, "PYTHON": sys.executable}, cwd=ROOT,
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"scripts/image.sh failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    yield tag
    podman("rmi", "--force", tag, check=False)


class Containers:
    """Containers and volumes made by one test, removed by name at its end."""

    def __init__(self, image: str) -> None:
        self.image = image
        self.names: list[str] = []
        self.volumes: list[str] = []

    def volume(self) -> str:
        name = f"kvbox-test-{uuid.uuid4().hex[:12]}"
        podman("volume", "create", name)
        self.volumes.append(name)
        return name

    def run(self, *, volume: str | None = None, env: dict[str, str] | None = None) -> tuple[str, str]:
        """Start a container on 127.0.0.1:<free port>; returns its name and URL once it is ready."""
        name = f"kvbox-test-{uuid.uuid4().hex[:12]}"
        port = free_port()
        settings = {"KVBOX_HOST": "127.0.0.1", "KVBOX_PORT": str(port), "KVBOX_ADMIN_TOKEN": TOKEN,
                    "KVBOX_SHUTDOWN_TIMEOUT": str(SHUTDOWN_TIMEOUT_S), **(env or {})}  # fmt: skip
        options = [arg for k, v in settings.items() for arg in ("--env", f"{k}={v}")]
        mounts = ["--volume", f"{volume}:/data"] if volume else []
        podman("run", "--detach", "--name", name, "--network=host", *options, *mounts, self.image)
        self.names.append(name)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    return name, url
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not ready:\n{podman('logs', name, check=False).stdout[-3000:]}")
            time.sleep(0.2)

    def remove(self) -> None:
        for name in self.names:
            podman("rm", "--force", "--time", "0", name, check=False)
        for volume in self.volumes:
            podman("volume", "rm", "--force", volume, check=False)


@pytest.fixture
def containers(image: str) -> Iterator[Containers]:
    made = Containers(image)
    try:
        yield made
    finally:
        made.remove()


def round_trip(url: str, value: object) -> None:
    client = ApifyClient(TOKEN, api_url=url, api_public_url=url, max_retries=2)
    store = client.key_value_stores().get_or_create(name="image")
    kvs = client.key_value_store(store.id)
    kvs.set_record("OUTPUT", value)
    record = kvs.get_record("OUTPUT")
    assert record is not None and record["value"] == value


def read_back(url: str) -> object:
    client = ApifyClient(TOKEN, api_url=url, api_public_url=url, max_retries=2)
    store = client.key_value_stores().get_or_create(name="image")
    record = client.key_value_store(store.id).get_record("OUTPUT")
    assert record is not None
    return record["value"]


def stuck_upload(url: str) -> socket.socket:
    """A PUT whose body never finishes arriving."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        f"PUT /v2/key-value-stores/~image/records/stuck HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}"
        f"\r\nContent-Length: 100000\r\n\r\n".encode()
        + b"x" * 100
    )
    return sock


def test_the_image_serves_keeps_its_volume_and_stops_on_sigterm(containers: Containers) -> None:
    volume = containers.volume()
    name, url = containers.run(volume=volume)
    round_trip(url, {"pages": 12, "ok": True})
    assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
    assert podman("healthcheck", "run", name).returncode == 0
    assert httpx.get(f"{url}/", timeout=5, follow_redirects=True).status_code == 200  # the console

    sock = stuck_upload(url)
    try:
        began = time.monotonic()
        podman("stop", "--time", "30", name, timeout=60)
        took = time.monotonic() - began
    finally:
        sock.close()
    assert took < SHUTDOWN_TIMEOUT_S + 5, f"stopped after {took:.1f} s"  # the drain ended at the timeout, not at 30 s
    assert podman("inspect", name, "--format", "{{.State.ExitCode}}").stdout.strip() == "0"

    _, again = containers.run(volume=volume)
    assert read_back(again) == {"pages": 12, "ok": True}
    r = httpx.get(f"{again}/v2/key-value-stores/~image/records/stuck", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 404  # the upload cut off by the stop left nothing behind


def test_the_image_on_postgresql_and_s3(containers: Containers, scale_out: ScaleOut) -> None:
    env = scale_out.server_env()
    kvbox_migrate(env)
    _, url = containers.run(env=env)
    round_trip(url, ["scale", "out"])
    checks = httpx.get(f"{url}/health/ready", timeout=10).json()["data"]["checks"]
    assert checks == {"index": "ok", "blobStore": "ok"}
