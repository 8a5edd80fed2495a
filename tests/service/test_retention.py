"""Retention of unnamed stores, on every backend, with a fake clock (nobody sleeps here).

An unnamed store goes `retention` after its last write or access; named stores stay. The
sweeper deletes a bounded number per pass, and a sweep cut short by a crash leaves no
half-deleted store: the store is gone at once, its rows and files are reclaimed later.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from conftest import ALICE_TOKEN, Api
from kvbox.core.clock import FakeClock, iso_ms
from kvbox.core.errors import StoreNotFoundError
from kvbox.core.models import User
from kvbox.server import create_app
from kvbox.service.container import Services, build_services
from kvbox.service.housekeeping import ORPHAN_MIN_AGE_MS
from kvbox.service.principal import Principal
from kvbox.service.settings import Settings, parse_duration_ms

pytestmark = pytest.mark.anyio

DAY = 86_400_000
RETENTION = 7 * DAY  # the fixture's default KVBOX_UNNAMED_RETENTION
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
BIG = b"x" * 2000  # over the 1024-byte inline threshold: kept in a blob
SMALL = b"small"


async def as_alice(services: Services) -> Principal:
    user: User = await services.users.find_user("alice")
    return Principal(user=user)


async def put(services: Services, who: Principal, store_id: str, key: str, data: bytes = SMALL) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield data

    await services.records.put(
        who, store_id, key, body=body(), content_type="application/octet-stream", content_encoding=None,
        content_length=len(data),
    )  # fmt: skip


async def new_store(services: Services, who: Principal, name: str | None = None) -> str:
    resolved, created = await services.stores.get_or_create(who, name=name)
    assert created
    return resolved.store.id


async def exists(services: Services, store_id: str) -> bool:
    return await services.index.get_store(store_id) is not None


async def blob_count(services: Services) -> int:
    far_future = services.clock.now_ms() + 365 * DAY
    return len([b async for b in services.blobs.list_ids(older_than_ms=far_future)])


async def test_default_retention_is_seven_days(services: Services) -> None:
    assert services.retention.retention_ms == RETENTION


# --- expiry -------------------------------------------------------------------------------


async def test_unnamed_store_expires_exactly_after_the_retention(services: Services, clock: FakeClock) -> None:
    who = await as_alice(services)
    created_at = clock.now_ms()
    store_id = await new_store(services, who)
    store = await services.index.get_store(store_id)
    assert store is not None
    assert services.retention.expires_at(store) == created_at + RETENTION

    clock.advance(ms=RETENTION)  # exactly at expiresAt: still kept
    assert await services.retention.sweep() == 0
    assert await exists(services, store_id)

    clock.advance(ms=1)
    assert await services.retention.sweep() == 1
    assert not await exists(services, store_id)
    with pytest.raises(StoreNotFoundError):
        await services.stores.get(who, store_id)
    assert await services.retention.sweep() == 0


async def test_sweep_deletes_only_expired_stores(services: Services, clock: FakeClock) -> None:
    who = await as_alice(services)
    old = await new_store(services, who)
    clock.advance(days=3)
    younger = await new_store(services, who)
    clock.advance(days=4, ms=1)  # `old` is 7 days + 1 ms old, `younger` 4 days
    assert await services.retention.sweep() == 1
    assert not await exists(services, old)
    assert await exists(services, younger)


async def get_record(services: Services, who: Principal, store_id: str) -> None:
    await services.records.get(who, store_id, "k")


async def head_record(services: Services, who: Principal, store_id: str) -> None:
    await services.records.head(who, store_id, "k")


async def list_keys(services: Services, who: Principal, store_id: str) -> None:
    await services.records.list_keys(who, store_id)


async def get_store(services: Services, who: Principal, store_id: str) -> None:
    await services.stores.get(who, store_id)


async def write_record(services: Services, who: Principal, store_id: str) -> None:
    await put(services, who, store_id, "other")


async def delete_record(services: Services, who: Principal, store_id: str) -> None:
    await services.records.delete(who, store_id, "k")


async def delete_missing_record(services: Services, who: Principal, store_id: str) -> None:
    await services.records.delete(who, store_id, "never-there")


Touch = Callable[[Services, Principal, str], Awaitable[None]]


@pytest.mark.parametrize(
    "touch",
    [get_record, head_record, list_keys, get_store, write_record, delete_record, delete_missing_record],
    ids=lambda f: f.__name__,
)
async def test_any_access_or_write_extends_the_retention(services: Services, clock: FakeClock, touch: Touch) -> None:
    who = await as_alice(services)
    store_id = await new_store(services, who)
    await put(services, who, store_id, "k")

    clock.advance(days=5)
    touched_at = clock.now_ms()
    await touch(services, who, store_id)
    await services.stats.flush()  # reads are buffered; writes are counted in their transaction
    store = await services.index.get_store(store_id)
    assert store is not None
    assert services.retention.expires_at(store) == touched_at + RETENTION

    clock.advance(ms=RETENTION)  # long past the original expiry, exactly at the new one
    assert await services.retention.sweep() == 0
    assert await exists(services, store_id)
    clock.advance(ms=1)
    assert await services.retention.sweep() == 1
    assert not await exists(services, store_id)


async def test_sweep_counts_reads_not_yet_flushed(services: Services, clock: FakeClock) -> None:
    who = await as_alice(services)
    store_id = await new_store(services, who)
    await put(services, who, store_id, "k")
    clock.advance(days=6)
    await services.records.get(who, store_id, "k")  # buffered, not flushed
    clock.advance(days=2)
    assert await services.retention.sweep() == 0
    assert await exists(services, store_id)


async def test_named_stores_are_never_swept(services: Services, clock: FakeClock) -> None:
    who = await as_alice(services)
    store_id = await new_store(services, who, "keeper")
    store = await services.index.get_store(store_id)
    assert store is not None and services.retention.expires_at(store) is None
    clock.advance(days=3650)
    assert await services.retention.sweep() == 0
    assert await exists(services, store_id)


async def test_naming_makes_a_store_permanent(services: Services, clock: FakeClock) -> None:
    who = await as_alice(services)
    store_id = await new_store(services, who)
    clock.advance(days=6)
    renamed = await services.stores.update(who, store_id, name="now-named")
    assert services.retention.expires_at(renamed.store) is None
    clock.advance(days=365)
    assert await services.retention.sweep() == 0
    assert await exists(services, store_id)


async def test_unnaming_starts_the_clock_from_the_unnaming(services: Services, clock: FakeClock) -> None:
    who = await as_alice(services)
    store_id = await new_store(services, who, "was-named")
    clock.advance(days=100)
    unnamed_at = clock.now_ms()
    resolved = await services.stores.update(who, store_id, name=None)
    assert resolved.store.name is None
    assert services.retention.expires_at(resolved.store) == unnamed_at + RETENTION

    clock.advance(ms=RETENTION)
    assert await services.retention.sweep() == 0
    clock.advance(ms=1)
    assert await services.retention.sweep() == 1
    assert not await exists(services, store_id)


async def test_a_store_named_or_used_after_the_listing_is_kept(
    services: Services, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sweeper lists first and deletes after; the delete re-checks in its own transaction."""
    who = await as_alice(services)
    named_later = await new_store(services, who)
    used_later = await new_store(services, who)
    expired = await new_store(services, who)
    clock.advance(ms=RETENTION + 1)
    stale = [named_later, used_later, expired]
    await services.stores.update(who, named_later, name="rescued")
    await put(services, who, used_later, "k")

    async def stale_listing(*, accessed_before: int, limit: int) -> list[str]:
        return stale[:limit]

    monkeypatch.setattr(services.index, "list_expired_stores", stale_listing)
    assert await services.retention.sweep() == 1
    assert (await exists(services, named_later), await exists(services, used_later)) == (True, True)
    assert not await exists(services, expired)


# --- expiresAt in the API -----------------------------------------------------------------


async def test_expires_at_in_the_store_object(api: Api, clock: FakeClock) -> None:
    created_at = clock.now_ms()
    unnamed = await api.create_store()
    assert ISO_MS.match(unnamed["expiresAt"])
    assert unnamed["expiresAt"] == iso_ms(created_at + RETENTION)
    named = await api.create_store("named")
    assert named["expiresAt"] is None

    # Reading the store is an access: it moves expiresAt.
    clock.advance(days=1, ms=123)
    r = await api.client.get(f"/v2/key-value-stores/{unnamed['id']}", headers=api.auth(ALICE_TOKEN))
    assert r.json()["data"]["expiresAt"] == iso_ms(clock.now_ms() + RETENTION)

    listed = await api.client.get("/v2/key-value-stores", params={"unnamed": "1"}, headers=api.auth())
    by_id = {s["id"]: s["expiresAt"] for s in listed.json()["data"]["items"]}
    assert by_id == {unnamed["id"]: iso_ms(clock.now_ms() + RETENTION), named["id"]: None}

    # Naming clears it; un-naming sets it from now.
    r = await api.client.put(f"/v2/key-value-stores/{unnamed['id']}", json={"name": "kept"}, headers=api.auth())
    assert r.json()["data"]["expiresAt"] is None
    clock.advance(days=30)
    r = await api.client.put(f"/v2/key-value-stores/{named['id']}", json={"name": None}, headers=api.auth())
    assert r.json()["data"]["expiresAt"] == iso_ms(clock.now_ms() + RETENTION)


async def test_swept_store_is_gone_from_the_api(api: Api, clock: FakeClock) -> None:
    store = await api.create_store()
    clock.advance(ms=RETENTION + 1)
    assert await api.services.retention.sweep() == 1
    r = await api.client.get(f"/v2/key-value-stores/{store['id']}", headers=api.auth())
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "record-not-found"
    listed = await api.client.get("/v2/key-value-stores", params={"unnamed": "1"}, headers=api.auth())
    assert listed.json()["data"]["total"] == 0


# --- bounded sweeps and reclaiming ----------------------------------------------------------


async def test_sweep_is_bounded_and_the_next_pass_continues(services: Services, clock: FakeClock) -> None:
    who = await as_alice(services)
    stores = []
    for _ in range(5):
        stores.append(await new_store(services, who))
        clock.advance(ms=1)
    clock.advance(ms=RETENTION)

    assert await services.retention.sweep(max_stores=2) == 2
    assert [await exists(services, s) for s in stores] == [False, False, True, True, True]  # oldest first
    assert await services.retention.sweep(max_stores=2) == 2
    assert await services.retention.sweep(max_stores=2) == 1
    assert await services.retention.sweep(max_stores=2) == 0
    assert [await exists(services, s) for s in stores] == [False] * 5


async def test_sweep_then_housekeeping_frees_record_blobs(services: Services, clock: FakeClock) -> None:
    who = await as_alice(services)
    doomed = await new_store(services, who)
    kept = await new_store(services, who, "kept")
    for key in ("a", "b", "c"):
        await put(services, who, doomed, key, BIG)
    await put(services, who, doomed, "inline", SMALL)
    await put(services, who, kept, "a", BIG)
    assert await blob_count(services) == 4

    clock.advance(ms=RETENTION + 1)
    assert await services.retention.sweep() == 1
    assert await blob_count(services) == 4  # deleting the store frees nothing by itself
    assert await services.index.purge_pending()
    assert await services.housekeeper.reclaim() == 3
    assert not await services.index.purge_pending()
    assert await blob_count(services) == 1
    read = await services.records.get(who, kept, "a")
    assert read.body is not None
    assert b"".join([c async for c in read.body]) == BIG


# --- a crash in the middle of a sweep (SQLite: the state survives the process) ---------------


def sqlite_settings(data_dir: Path) -> Settings:
    return Settings(
        backend="sqlite",
        data_dir=data_dir,
        public_url="http://kvbox.test",
        inline_threshold=1024,
        rate_limits=False,
        unnamed_retention="1h",
    )


def blob_files(data_dir: Path) -> list[Path]:
    return [p for p in (data_dir / "blobs").rglob("*") if p.is_file() and re.fullmatch(r"[0-9a-f]{32}", p.name)]


def record_rows(data_dir: Path) -> int:
    conn = sqlite3.connect(data_dir / "kvbox.sqlite3")
    try:
        return int(conn.execute("SELECT count(*) FROM records").fetchone()[0])
    finally:
        conn.close()


async def test_crash_mid_sweep_leaves_no_half_deleted_store(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    clock = FakeClock()
    first = build_services(sqlite_settings(data_dir), clock=clock)
    try:
        issued = await first.users.create_user("alice", token=ALICE_TOKEN)
        who = Principal(user=issued.user)
        stores = []
        for _ in range(3):
            store_id = await new_store(first, who)
            await put(first, who, store_id, "big-1", BIG)
            await put(first, who, store_id, "big-2", BIG)
            await put(first, who, store_id, "small", SMALL)
            stores.append(store_id)
            clock.advance(ms=1)
        clock.advance(ms=3_600_000)
        # The process dies after deleting one store and before any housekeeping.
        assert await first.retention.sweep(max_stores=1) == 1
    finally:
        await first.close()
    assert len(blob_files(data_dir)) == 6
    assert record_rows(data_dir) == 9

    second = build_services(sqlite_settings(data_dir), clock=clock)
    try:
        app = create_app(services=second)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kvbox.test") as client:
            headers = {"Authorization": f"Bearer {ALICE_TOKEN}"}
            r = await client.get(f"/v2/key-value-stores/{stores[0]}", headers=headers)
            assert r.status_code == 404
            r = await client.get(f"/v2/key-value-stores/{stores[0]}/records/big-1", headers=headers)
            assert r.status_code == 404
            assert await exists(second, stores[1])  # (not through the API: a GET would renew it)

            # The next pass finishes the job: the other expired stores, then every row and file.
            assert await second.retention.sweep() == 2
            freed = 0
            while True:
                freed += await second.housekeeper.reclaim()
                if not await second.index.purge_pending():
                    break
            assert freed == 6
            for store_id in stores:
                r = await client.get(f"/v2/key-value-stores/{store_id}", headers=headers)
                assert r.status_code == 404
    finally:
        await second.close()
    assert blob_files(data_dir) == []
    assert record_rows(data_dir) == 0


async def test_crash_between_purge_and_file_delete_is_collected_later(tmp_path: Path) -> None:
    """Rows purged but the process died before deleting the files: orphan collection frees them."""
    data_dir = tmp_path / "data"
    # File times are real: start the clock two hours back so the files count as fresh at first.
    clock = FakeClock(start_ms=int(time.time() * 1000) - 2 * 3_600_000)
    first = build_services(sqlite_settings(data_dir), clock=clock)
    try:
        issued = await first.users.create_user("alice", token=ALICE_TOKEN)
        who = Principal(user=issued.user)
        store_id = await new_store(first, who)
        for key in ("a", "b", "c"):
            await put(first, who, store_id, key, BIG)
        clock.advance(ms=3_600_001)
        assert await first.retention.sweep() == 1
        assert len(await first.index.purge_deleted(max_rows=2)) == 2  # rows gone, files not deleted
    finally:
        await first.close()
    assert len(blob_files(data_dir)) == 3

    second = build_services(sqlite_settings(data_dir), clock=clock)
    try:
        assert await second.housekeeper.reclaim() == 1
        assert not await second.index.purge_pending()
        assert len(blob_files(data_dir)) == 2
        assert await second.housekeeper.collect_orphans() == 0  # too young: could be a write about to commit
        clock.advance(ms=3_600_000 + ORPHAN_MIN_AGE_MS + 60_000)
        assert await second.housekeeper.collect_orphans() == 2
    finally:
        await second.close()
    assert blob_files(data_dir) == []


# --- KVBOX_UNNAMED_RETENTION ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [("7d", 7 * DAY), ("12h", 12 * 3_600_000), ("1s", 1000), ("30m", 1_800_000), ("2w", 14 * DAY),
     ("250ms", 250), ("90", 90_000), (" 1.5h ", 5_400_000)],
)  # fmt: skip
def test_retention_setting_parses(value: str, ms: int) -> None:
    settings = Settings.from_env({"KVBOX_UNNAMED_RETENTION": value}, backend="memory")
    services = build_services(settings)
    assert services.retention.retention_ms == ms
    assert parse_duration_ms(value) == ms


@pytest.mark.parametrize("value", ["", "soon", "7 days", "-1d", "1y", "d", "1d2h"])
def test_bad_retention_setting_is_an_error(value: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        Settings.from_env({"KVBOX_UNNAMED_RETENTION": value})


async def test_retention_setting_drives_the_sweep(tmp_path: Path) -> None:
    clock = FakeClock()
    services = build_services(Settings(backend="memory", unnamed_retention="1s", rate_limits=False), clock=clock)
    try:
        issued = await services.users.create_user("alice", token=ALICE_TOKEN)
        store_id = await new_store(services, Principal(user=issued.user))
        clock.advance(ms=1000)
        assert await services.retention.sweep() == 0
        clock.advance(ms=1)
        assert await services.retention.sweep() == 1
        assert not await exists(services, store_id)
    finally:
        await services.close()
