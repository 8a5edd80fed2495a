"""`kvbox verify`'s check of an index against its blobs, on every backend."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from conftest import ALICE_TOKEN
from kvbox.service.container import Services
from kvbox.service.copy import fingerprint
from kvbox.service.verify import MISSING, WRONG_COUNTERS, WRONG_SIZE, VerifyReport, verify

pytestmark = pytest.mark.anyio
BIG = os.urandom(5000)  # above the fixture's 1 KiB inline threshold: a blob


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def filled(services: Services) -> str:
    """A store with a small and a large record; returns its id."""
    who = await services.auth.authenticate(ALICE_TOKEN)
    resolved, _ = await services.stores.get_or_create(who, name="checked")
    for key, data in (("small", b"tiny"), ("large", BIG), ("other", BIG[:2000])):
        await services.records.put(
            who, resolved.store.id, key, body=body(data), content_type="application/octet-stream",
            content_encoding=None, content_length=len(data),
        )  # fmt: skip
    return resolved.store.id


def far_future() -> int:
    return int(time.time() * 1000) + 3_600_000


async def check(services: Services) -> VerifyReport:
    return await verify(services.index, services.blobs, orphans_before_ms=far_future())


async def test_a_whole_deployment_passes_with_the_copys_checksum(services: Services) -> None:
    await filled(services)
    report = await check(services)
    assert report.ok, report.damage
    assert (report.tally.stores, report.tally.records, report.blobs) == (1, 3, 2)
    assert report.tally.bytes == 4 + len(BIG) + 2000
    expected = await fingerprint(services.index, services.blobs)
    assert (report.tally.counts(), report.tally.checksum) == (expected.counts(), expected.checksum)
    assert report.orphans == [] and report.busy == []


async def test_a_lost_blob_is_damage(services: Services) -> None:
    store_id = await filled(services)
    row = await services.index.get_record(store_id, "large")
    assert row is not None and row.blob_id is not None
    await services.blobs.delete(row.blob_id)
    report = await check(services)
    assert not report.ok
    (finding,) = report.damage
    assert (finding.problem, finding.store_id, finding.key) == (MISSING, store_id, "large")
    assert row.blob_id in finding.detail


async def test_a_blob_no_record_points_to_is_an_orphan_not_damage(services: Services) -> None:
    await filled(services)
    writer = await services.blobs.create()
    await writer.write(b"left by a crash")
    stray = await writer.commit()
    report = await check(services)
    assert report.ok
    assert report.orphans == [stray]
    recent = await verify(services.index, services.blobs, orphans_before_ms=int(time.time() * 1000) - 60_000)
    assert recent.orphans == []  # too young: it may belong to a write about to commit


@pytest.mark.parametrize("services", ["sqlite", "postgres"], indirect=True)
async def test_counters_that_disagree_with_the_rows_are_damage(services: Services) -> None:
    store_id = await filled(services)
    await services.index.delete_record(store_id, "small", now_ms=int(time.time() * 1000))
    await tamper_counters(services, store_id)
    report = await check(services)
    (finding,) = report.damage
    assert (finding.problem, finding.store_id, finding.key) == (WRONG_COUNTERS, store_id, None)
    assert "counters say 3 records" in finding.detail and "rows hold 2 records" in finding.detail


async def tamper_counters(services: Services, store_id: str) -> None:
    """Put the store's record count back to 3 behind the index's back."""
    if services.settings.metadata_url:
        with psycopg.connect(services.settings.metadata_url, autocommit=True) as conn:
            conn.execute("UPDATE stores SET record_count = 3 WHERE id = %s", (store_id,))
        return
    with sqlite3.connect(services.settings.data_dir / "kvbox.sqlite3") as conn:
        conn.execute("UPDATE stores SET record_count = 3 WHERE id = ?", (store_id,))


@pytest.mark.parametrize("services", ["sqlite"], indirect=True)
async def test_a_truncated_record_file_is_damage(services: Services) -> None:
    store_id = await filled(services)
    row = await services.index.get_record(store_id, "large")
    assert row is not None and row.blob_id is not None
    path = services.settings.data_dir / "blobs" / row.blob_id[:2] / row.blob_id[2:4] / row.blob_id
    path.write_bytes(BIG[:100])
    (finding,) = (await check(services)).damage
    assert (finding.problem, finding.key) == (WRONG_SIZE, "large")
    assert f"100 bytes stored, {len(BIG)} recorded" == finding.detail
