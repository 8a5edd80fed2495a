"""A full disk, for real: the embedded backend on a small tmpfs filled to the last byte.

Writes answer `507 insufficient-storage` and leave nothing behind; reads, listings and store
pages keep working; read counters wait in memory; freeing space brings writes back without
a restart. Mounting needs root (CI runs as root): elsewhere these tests fail, never skip.
"""

from __future__ import annotations

import errno
import logging
import os
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ALICE_TOKEN
from kvbox.core.clock import FakeClock
from kvbox.server import create_app
from kvbox.service.container import Services, build_services
from kvbox.service.settings import Settings

pytestmark = pytest.mark.anyio

S = "/v2/key-value-stores"
AUTH = {"Authorization": f"Bearer {ALICE_TOKEN}"}
DISK_SIZE = "8m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MiB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.fail("the disk-full tests mount a small tmpfs and need root (CI runs as root); run them as root")
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, f"could not mount a tmpfs as root: {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Fill the disk to the last byte with one file (kvbox knows nothing of it)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (65536, 512, 1):  # big steps, then what fits in the last blocks
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


@pytest.fixture
async def full(small_disk: Path, clock: FakeClock) -> AsyncIterator[tuple[Services, httpx.AsyncClient]]:
    settings = Settings(backend="sqlite", data_dir=small_disk / "data", public_url="http://kvbox.test",
                        inline_threshold=1024, rate_limits=False)  # fmt: skip
    svc = build_services(settings, clock=clock)
    await svc.users.create_user("alice", token=ALICE_TOKEN)
    transport = httpx.ASGITransport(app=create_app(services=svc))
    async with httpx.AsyncClient(transport=transport, base_url="http://kvbox.test", headers=AUTH) as client:
        yield svc, client
    await svc.close()


async def test_a_full_disk_refuses_writes_and_keeps_reads(
    full: tuple[Services, httpx.AsyncClient], small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc, client = full
    store = (await client.post(S, params={"name": "full"}, json={})).json()["data"]["id"]
    records = f"{S}/{store}/records"
    assert (await client.put(f"{records}/small", content=b"tiny")).status_code == 201
    assert (await client.put(f"{records}/big", content=b"b" * 100_000)).status_code == 201
    filler = fill(small_disk)

    # Writes: 507, in the envelope, and nothing partial left behind.
    refused = 0
    for i in range(20):  # small ones may still fit in free database pages: sooner or later they stop
        for key, body in ((f"blob{i}", b"x" * 200_000), (f"inline{i}", b"y" * 600)):
            r = await client.put(f"{records}/{key}", content=body)
            assert r.status_code in (201, 507), r.text
            if r.status_code == 507:
                refused += 1
                assert r.json()["error"]["type"] == "insufficient-storage"
                assert (await client.get(f"{records}/{key}")).status_code == 404
    assert refused >= 20
    assert list((small_disk / "data" / "blobs" / "tmp").iterdir()) == []
    r = await client.post(S, params={"name": "another"}, json={})
    assert r.status_code in (201, 507)

    # Reads, listings and store pages go on; their counters wait in memory.
    for _ in range(3):
        assert (await client.get(f"{records}/big")).content == b"b" * 100_000
        assert (await client.get(f"{records}/small")).content == b"tiny"
        assert (await client.get(f"{S}/{store}/keys")).status_code == 200
        assert (await client.get(f"{S}/{store}")).status_code == 200
        assert (await client.get(S)).status_code == 200
    assert (await client.head(f"{records}/big")).status_code == 200

    # Space comes back: writes work again, counters catch up, no restart.
    filler.unlink()
    r = await client.put(f"{records}/after", content=b"z" * 200_000)
    assert r.status_code == 201, r.text
    assert (await client.get(f"{records}/after")).content == b"z" * 200_000
    assert await svc.stats.try_flush()
    data = (await client.get(f"{S}/{store}")).json()["data"]
    assert data["stats"]["readCount"] >= 7  # the six reads on a full disk and the one after
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


async def test_the_background_flush_logs_a_full_disk_once(
    full: tuple[Services, httpx.AsyncClient], small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    svc, client = full
    caplog.set_level(logging.INFO, logger="kvbox")
    store = (await client.post(S, params={"name": "counted"}, json={})).json()["data"]["id"]
    assert (await client.put(f"{S}/{store}/records/k", content=b"v")).status_code == 201
    filler = fill(small_disk)
    failing = svc.housekeeper._failing
    for _ in range(5):
        assert (await client.get(f"{S}/{store}/records/k")).status_code == 200
        try:
            await svc.stats.flush()
        except Exception as exc:
            failing.report(exc)
    waits = [r for r in caplog.records if "waits" in r.getMessage()]
    assert len(waits) <= 1 and not [r for r in caplog.records if r.exc_info]
    filler.unlink()
    await svc.stats.flush()
    failing.recovered()
    assert (await client.get(f"{S}/{store}")).json()["data"]["stats"]["readCount"] == 5
