"""What only the embedded backend has: a file that persists and is shared, and blob files."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anyio
import pytest

from kvbox.backends.sqlite.blobs import FileBlobStore
from kvbox.backends.sqlite.checkpoint import Checkpointer
from kvbox.backends.sqlite.metadata import SqliteMetadataIndex
from kvbox.backends.sqlite.schema import SCHEMA_VERSION, migrate, user_version
from kvbox.core.errors import NameNotUniqueError, StorageError
from kvbox.core.expiry import sorted_rules
from kvbox.core.ids import new_blob_name, new_id, new_secret
from kvbox.core.models import NO_EXPIRY, ExpiryRule, RecordExpiry, RecordMeta, Store, User, Visibility

pytestmark = pytest.mark.anyio

T0 = 1_767_225_600_000


def make_store(name: str | None = None) -> Store:
    return Store(
        id=new_id(),
        name=name,
        user_id="user1",
        created_at=T0,
        modified_at=T0,
        accessed_at=T0,
        url_signing_secret=new_secret(),
    )


def rec(key: str, body: bytes = b"body") -> RecordMeta:
    return RecordMeta(
        key=key,
        content_type="text/plain",
        encoding="identity",
        size=len(body),
        etag='"e"',
        modified_at=T0,
        inline=body,
    )


# the index file


async def test_data_survives_close_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    index = SqliteMetadataIndex(path)
    store = make_store("kept")
    await index.insert_user(User(id="u1", username="ann", created_at=T0))
    await index.insert_store(store)
    await index.put_record(store.id, rec("k", b"hello"))
    await index.close()

    reopened = SqliteMetadataIndex(path)
    try:
        assert await reopened.get_user_by_name("ann") is not None
        got = await reopened.get_store_by_name("user1", "kept")
        assert got is not None and got.record_count == 1
        record = await reopened.get_record(store.id, "k")
        assert record is not None and record.inline == b"hello"
    finally:
        await reopened.close()


async def test_two_instances_see_each_others_commits(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    a, b = SqliteMetadataIndex(path), SqliteMetadataIndex(path)
    try:
        store = make_store("shared")
        await a.insert_store(store)
        assert await b.get_store(store.id) is not None

        await b.put_record(store.id, rec("k1"))
        assert await a.get_record(store.id, "k1") == rec("k1")
        page = await a.list_keys(store.id, after=None, prefix=None, limit=10)
        assert [i.key for i in page.items] == ["k1"]

        await a.delete_record(store.id, "k1", now_ms=T0 + 1)
        assert await b.get_record(store.id, "k1") is None
        seen = await b.get_store(store.id)
        assert seen is not None and seen.stats.delete_count == 1

        with pytest.raises(NameNotUniqueError):
            await b.insert_store(make_store("shared"))
        await b.delete_store(store.id)
        assert await a.get_store(store.id) is None
    finally:
        await a.close()
        await b.close()


async def test_read_generation_moves_with_commits_of_other_processes_only(tmp_path: Path) -> None:
    """The generation is read from the WAL index in shared memory, not by a statement: a
    commit in another process moves it, reads and idle time do not."""
    path = tmp_path / "index.sqlite3"
    index = SqliteMetadataIndex(path)
    try:
        assert index._wal_watch is not None  # the in-memory path is the one under test
        store = make_store("watched")
        await index.insert_store(store)
        before = index.read_generation()
        assert await index.get_store(store.id) is not None
        assert index.read_generation() == before
        script = textwrap.dedent("""
            import sqlite3, sys
            conn = sqlite3.connect(sys.argv[1], isolation_level=None)
            conn.execute("UPDATE stores SET title = 'changed' WHERE id = ?", (sys.argv[2],))
        """)
        subprocess.run([sys.executable, "-c", script, str(path), store.id], check=True, timeout=60)
        after = index.read_generation()
        assert after != before
        assert index.read_generation() == after
        seen = await index.get_store(store.id)
        assert seen is not None and seen.title == "changed"
    finally:
        await index.close()


def _dms_lock_seen_from_another_process(path: Path) -> str:
    """What another process sees of SQLite's "a connection is open" lock on the WAL index (a
    read lock on byte 128 of the -shm file, https://sqlite.org/walformat.html)."""
    script = textwrap.dedent("""
        import fcntl, os, struct, sys
        fd = os.open(sys.argv[1] + "-shm", os.O_RDWR)
        probe = struct.pack("hh4xqqi4x", fcntl.F_WRLCK, os.SEEK_SET, 128, 1, 0)
        kind = struct.unpack("hh4xqqi4x", fcntl.fcntl(fd, fcntl.F_GETLK, probe))[0]
        print({fcntl.F_RDLCK: "read", fcntl.F_WRLCK: "write", fcntl.F_UNLCK: "none"}[kind])
    """)
    done = subprocess.run([sys.executable, "-c", script, str(path)], check=True, timeout=60, capture_output=True)
    return done.stdout.decode().strip()


async def test_watching_the_wal_index_keeps_sqlites_locks(tmp_path: Path) -> None:
    """POSIX locks go when a process closes any descriptor of the file: the watch must not
    open (and close) one, or another process would think the index unused and reset it."""
    path = tmp_path / "index.sqlite3"
    index = SqliteMetadataIndex(path)
    try:
        assert index._wal_watch is not None
        await index.insert_store(make_store("locked"))
        index.read_generation()
        assert _dms_lock_seen_from_another_process(path) == "read"
    finally:
        await index.close()


async def test_read_generation_without_a_mappable_wal_index_asks_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    index, other = SqliteMetadataIndex(path), SqliteMetadataIndex(path)
    try:
        index._wal_watch = None
        before = index.read_generation()
        await other.insert_store(make_store("elsewhere"))
        assert index.read_generation() != before
    finally:
        await index.close()
        await other.close()


def test_processes_opening_a_new_file_at_once(tmp_path: Path) -> None:
    """Several processes racing to create and migrate the same file all succeed."""
    path = tmp_path / "index.sqlite3"
    script = textwrap.dedent(
        """
        import asyncio, sys
        from pathlib import Path
        from kvbox.backends.sqlite.metadata import SqliteMetadataIndex
        from kvbox.core.models import User

        async def main(n):
            index = SqliteMetadataIndex(Path(sys.argv[1]))
            await index.insert_user(User(id=f"u{n}", username=f"user{n}", created_at=n))
            await index.close()

        asyncio.run(main(int(sys.argv[2])))
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), str(n)], stderr=subprocess.PIPE) for n in range(8)
    ]
    errors = [proc.communicate(timeout=60)[1].decode() for proc in procs]  # every pipe read and closed
    assert [proc.returncode for proc in procs] == [0] * len(procs), errors
    conn = sqlite3.connect(path)
    try:
        assert user_version(conn) == SCHEMA_VERSION
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 8
    finally:
        conn.close()


async def test_the_record_reads_of_one_turn_are_one_statement_per_store(tmp_path: Path) -> None:
    index = SqliteMetadataIndex(tmp_path / "index.sqlite3")
    try:
        one, two = make_store("one"), make_store("two")
        for store in (one, two):
            await index.insert_store(store)
        for key in ("a", "b", "c", "old-1", "old-2"):
            await index.put_record(one.id, rec(key, f"one {key}".encode()))
        await index.put_record(two.id, rec("a", b"two a"))
        assert await index.delete_prefix(one.id, "old-", visible=Visibility(T0 + 1, NO_EXPIRY)) == 2
        statements: list[str] = []
        index._conn.set_trace_callback(statements.append)
        wanted = [(one.id, "a"), (two.id, "a"), (one.id, "missing"), (one.id, "c"), (one.id, "old-1"),
                  (one.id, "a"), ("no-such-store", "a")]  # fmt: skip
        found = await asyncio.gather(*(index.get_record(store_id, key) for store_id, key in wanted))
        index._conn.set_trace_callback(None)
        bodies = [r.inline if r is not None else None for r in found]
        assert bodies == [b"one a", b"two a", None, b"one c", None, b"one a", None]
        assert len([s for s in statements if s.startswith("SELECT")]) == 3  # one per store asked for
        assert (await index.get_record(one.id, "b")) is not None  # a turn with one read
    finally:
        await index.close()


async def test_migration_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    await SqliteMetadataIndex(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        tables = conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        assert migrate(conn) == SCHEMA_VERSION  # already current: nothing to do
        assert conn.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall() == tables
        assert user_version(conn) == SCHEMA_VERSION
    finally:
        conn.close()
    await SqliteMetadataIndex(path).close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StorageError):
        SqliteMetadataIndex(path)


@pytest.mark.parametrize(("durable", "synchronous"), [(False, 1), (True, 2)])
async def test_connection_settings(tmp_path: Path, durable: bool, synchronous: int) -> None:
    index = SqliteMetadataIndex(tmp_path / "index.sqlite3", durable=durable)
    conn = index._conn
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
        for each in (conn, index._writer._connection()):  # the reads' and the group commit's
            assert each.execute("PRAGMA synchronous").fetchone()[0] == synchronous  # 1 NORMAL, 2 FULL
            assert each.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0  # never inline on a commit
    finally:
        await index.close()


def wal_frames(path: Path) -> tuple[int, int]:
    """(frames in the WAL, frames already copied back into the database), from the WAL index
    header in the -shm file (https://sqlite.org/walformat.html)."""
    shm = Path(f"{path}-shm").read_bytes()
    return struct.unpack_from("=I", shm, 16)[0], struct.unpack_from("=I", shm, 96)[0]


async def test_a_thread_checkpoints_the_wal_that_commits_leave_alone(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    index = SqliteMetadataIndex(path)
    try:
        store = make_store("big")
        await index.insert_store(store)
        for n in range(600):  # about 1,500 WAL pages: past SQLite's inline threshold of 1,000
            await index.put_record(store.id, rec(f"k{n:04d}", os.urandom(2048)))
        deadline = time.monotonic() + 20
        frames, copied = wal_frames(path)
        while (frames == 0 or copied < frames) and time.monotonic() < deadline:
            await anyio.sleep(0.05)
            frames, copied = wal_frames(path)
        assert frames > 1000 and copied == frames
    finally:
        await index.close()


def most_wal_frames_under_steady_commits(path: Path, restart_frames: int) -> int:
    """The most frames the WAL held over the last 2,000 of 3,000 commits made one after another,
    with a checkpointer running every 2 ms."""
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    checkpointer = Checkpointer(path, interval_s=0.002, restart_frames=restart_frames)
    most = 0
    try:
        for n in range(3000):
            writer.execute("INSERT OR REPLACE INTO t VALUES (?, ?)", (n % 500, os.urandom(2048)))
            if n >= 1000:
                most = max(most, wal_frames(path)[0])
            time.sleep(0.0001)  # the lock free between commits, as between a loop's group commits
    finally:
        checkpointer.close()
        writer.close()
    return most


def test_a_steady_stream_of_commits_has_the_wal_started_over(tmp_path: Path) -> None:
    # With passive checkpoints alone the WAL held 2,000-4,000 frames by the end (checked by
    # passing a restart threshold no WAL reaches); restarting at 64 frames kept it under 130.
    assert most_wal_frames_under_steady_commits(tmp_path / "steady.sqlite3", restart_frames=64) < 1000


RULES = RecordExpiry(sorted_rules([ExpiryRule("", 60), ExpiryRule("k", 5)]))


@pytest.mark.parametrize(("after", "prefix"), [(None, None), ("k5", None), (None, "k"), ("k5", "k"), ("a", "k")])
@pytest.mark.parametrize("visible", [None, Visibility(T0), Visibility(T0, RULES)], ids=["all", "expiry", "rules"])
async def test_key_listing_is_a_covering_index_range_scan(
    tmp_path: Path, after: str | None, prefix: str | None, visible: Visibility | None
) -> None:
    index = SqliteMetadataIndex(tmp_path / "index.sqlite3")
    store = make_store()
    await index.insert_store(store)
    statements: list[str] = []
    index._conn.set_trace_callback(statements.append)
    await index.list_keys(store.id, after=after, prefix=prefix, limit=10, visible=visible)
    index._conn.set_trace_callback(None)
    (listing,) = [s for s in statements if "FROM records" in s]
    plan = " | ".join(row[3] for row in index._conn.execute("EXPLAIN QUERY PLAN " + listing))
    await index.close()
    assert "SEARCH records USING COVERING INDEX records_listing (store_pk=? AND key>" in plan
    assert "SCAN" not in plan and "TEMP B-TREE" not in plan


async def test_corrupt_rows_raise_storage_error_with_cause(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    index = SqliteMetadataIndex(path)
    store = make_store("broken")
    await index.insert_store(store)
    raw = sqlite3.connect(path)
    raw.execute("UPDATE stores SET general_access = 'NOT_A_LEVEL'")
    raw.commit()
    raw.close()
    try:
        with pytest.raises(StorageError) as caught:
            await index.get_store(store.id)
        assert isinstance(caught.value.__cause__, ValueError)
    finally:
        await index.close()
    with pytest.raises(StorageError) as closed:
        await index.get_store(store.id)
    assert isinstance(closed.value.__cause__, sqlite3.Error)


def test_unopenable_path_raises_storage_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError) as caught:
        SqliteMetadataIndex(tmp_path / "no-such-dir" / "index.sqlite3")
    assert isinstance(caught.value.__cause__, sqlite3.Error)


# blob files


async def read_all(blobs: FileBlobStore, blob_id: str) -> list[bytes]:
    return [chunk async for chunk in await blobs.open(blob_id)]


async def test_blob_write_commit_read_delete(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs", chunk_size=4)
    writer = await blobs.create()
    await writer.write(b"hello ")
    await writer.write(b"world")
    blob_id = await writer.commit()

    assert len(blob_id) == 32
    path = tmp_path / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id
    assert path.read_bytes() == b"hello world"
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    assert await read_all(blobs, blob_id) == [b"hell", b"o wo", b"rld"]

    with pytest.raises(StorageError):
        await writer.write(b"more")
    await writer.abort()  # after commit: nothing to undo
    assert path.exists()

    await blobs.delete(blob_id)
    assert not path.exists()
    await blobs.delete(blob_id)  # missing: no-op
    with pytest.raises(StorageError):
        await read_all(blobs, blob_id)
    await blobs.close()


async def test_durable_blob_and_empty_body(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs", durable=True)
    writer = await blobs.create()
    blob_id = await writer.commit()
    assert await read_all(blobs, blob_id) == []


async def test_blob_abort_removes_temp_file(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    writer = await blobs.create()
    await writer.write(b"partial")
    assert len(list((tmp_path / "blobs" / "tmp").iterdir())) == 1
    await writer.abort()
    await writer.abort()
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []
    assert [b async for b in blobs.list_ids(older_than_ms=2**62)] == []


async def test_blob_reader_stops_early_cleanly(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs", chunk_size=2)
    writer = await blobs.create()
    await writer.write(b"abcdef")
    blob_id = await writer.commit()
    reader = await blobs.open(blob_id)
    assert await reader.__anext__() == b"ab"
    await reader.aclose()
    await blobs.delete(blob_id)


async def test_an_open_blob_stays_readable_after_delete(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs", chunk_size=2)
    writer = await blobs.create()
    await writer.write(b"abcdef")
    blob_id = await writer.commit()
    reader = await blobs.open(blob_id)
    await blobs.delete(blob_id)  # a newer write replaced it while this read was starting
    assert b"".join([chunk async for chunk in reader]) == b"abcdef"
    with pytest.raises(StorageError):
        await blobs.open(blob_id)


def set_age(path: Path, ms_since_epoch: int) -> None:
    os.utime(path, ns=(ms_since_epoch * 1_000_000, ms_since_epoch * 1_000_000))


async def test_list_ids_filters_by_age_and_sweeps_stale_temp_files(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    ids = []
    for body in (b"old", b"new"):
        writer = await blobs.create()
        await writer.write(body)
        ids.append(await writer.commit())
    old_id, new_id_ = ids
    now = time.time_ns() // 1_000_000
    set_age(blobs.path_of(old_id), now - 3_600_000)

    stale = await blobs.create()
    await stale.write(b"crashed writer")
    stale._file.close()  # its process died: the descriptor, and the lock on the file, are gone
    (stale_path,) = (tmp_path / "blobs" / "tmp").iterdir()
    set_age(stale_path, now - 3_600_000)
    fresh = await blobs.create()
    (tmp_path / "blobs" / "ab").mkdir(exist_ok=True)
    (tmp_path / "blobs" / "ab" / "not-a-blob").write_bytes(b"")  # foreign files are ignored

    cutoff = now - 60_000
    assert [b async for b in blobs.list_ids(older_than_ms=cutoff)] == [old_id]
    assert not stale_path.exists()
    assert len(list((tmp_path / "blobs" / "tmp").iterdir())) == 1  # the fresh writer's file
    assert sorted([b async for b in blobs.list_ids(older_than_ms=now + 60_000)]) == sorted(ids)
    await fresh.abort()
    assert new_id_ in ids
    await stale.abort()  # the crashed writer's file is gone; this closes its descriptor


@pytest.mark.parametrize(
    "bad_id",
    ["../../etc/passwd", "ABCDEF0123456789ABCDEF0123456789", "abc", "0123456789abcdef0123456789abcdeg",
     "0123456789abcdef0123456789abcdef/", "/0123456789abcdef0123456789abcdef", ""],
)  # fmt: skip
async def test_bad_blob_ids_are_rejected(tmp_path: Path, bad_id: str) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    with pytest.raises(StorageError):
        await read_all(blobs, bad_id)
    with pytest.raises(StorageError):
        await blobs.delete(bad_id)
    with pytest.raises(StorageError):
        blobs.path_of(bad_id)


async def test_missing_blob_read_raises(tmp_path: Path) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    with pytest.raises(StorageError):
        await read_all(blobs, new_blob_name())


async def test_failed_commit_raises_storage_error_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blobs = FileBlobStore(tmp_path / "blobs")
    writer = await blobs.create()
    await writer.write(b"data")

    def disk_full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(StorageError) as caught:
        await writer.commit()
    assert isinstance(caught.value.__cause__, OSError)
    assert list((tmp_path / "blobs" / "tmp").iterdir()) == []


async def test_a_version_3_database_is_upgraded_with_its_records(tmp_path: Path) -> None:
    """The lifecycle migration keeps every record: no own expiry, and written before any
    deletion by prefix (seq 0)."""
    from kvbox.backends.sqlite.schema import MIGRATIONS

    path = tmp_path / "index.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in (s for version in MIGRATIONS[:3] for s in version):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 3")
    conn.execute(
        "INSERT INTO stores (id, name, user_id, created_at, modified_at, accessed_at, url_signing_secret, "
        "general_access, write_count, storage_bytes, record_count) "
        "VALUES ('s1', 'old', 'u1', ?, ?, ?, 'secret', 'RESTRICTED', 2, 2, 2)",
        (T0, T0, T0),
    )
    for key in ("a-1", "b-1"):
        conn.execute(
            "INSERT INTO records (store_pk, key, content_type, encoding, size, etag, modified_at, inline_body) "
            "VALUES (1, ?, 'text/plain', 'identity', 1, 'e', ?, x'78')",
            (key, T0),
        )
    conn.close()

    index = SqliteMetadataIndex(path)
    store = await index.get_store("s1")
    assert store is not None and store.record_expiry.rules == () and store.record_count == 2
    old = await index.get_record("s1", "a-1")
    assert old is not None and old.expires_at is None and old.inline == b"x"
    page = await index.list_keys("s1", after=None, prefix=None, limit=10, visible=Visibility(T0))
    assert [(i.key, i.content_type, i.etag) for i in page.items] == [
        ("a-1", "text/plain", "e"),
        ("b-1", "text/plain", "e"),
    ]
    assert await index.delete_prefix("s1", "a-", visible=Visibility(T0)) == 1
    assert await index.get_record("s1", "a-1") is None
    await index.close()


async def test_exclusive_admits_one_process_at_a_time(tmp_path: Path) -> None:
    """The sweepers of a server's workers take turns: another process holding the lock wins."""
    path = tmp_path / "index.sqlite3"
    index = SqliteMetadataIndex(path)
    async with index.exclusive("sweeper") as first:
        assert first is True
        async with index.exclusive("sweeper") as second, index.exclusive("other job") as other:
            assert second is False and other is True
        holder = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(
                f"""
                import fcntl, os
                fd = os.open({str(path) + '.sweeper.lock'!r}, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    print("got it")
                except BlockingIOError:
                    print("held")
                """
            )],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert holder.stdout.strip() == "held"
    async with index.exclusive("sweeper") as after_release:
        assert after_release is True
    await index.close()


@pytest.mark.parametrize("search", [None, "alpha"])
async def test_store_listing_by_name_walks_the_name_index(tmp_path: Path, search: str | None) -> None:
    index = SqliteMetadataIndex(tmp_path / "index.sqlite3")
    for i in range(50):
        await index.insert_store(make_store(name=f"store-{i}"))
    statements: list[str] = []
    index._conn.set_trace_callback(statements.append)
    await index.list_stores("user1", include_unnamed=False, offset=0, limit=10, desc=False, by_name=True, search=search)
    index._conn.set_trace_callback(None)
    plans = [" | ".join(row[3] for row in index._conn.execute("EXPLAIN QUERY PLAN " + s)) for s in statements
             if "FROM stores" in s]  # fmt: skip
    await index.close()
    # The count walks an index of the owner's stores; the page walks the folded-name index in order.
    assert plans and all("SCAN stores" not in plan and "TEMP B-TREE" not in plan for plan in plans), plans
    assert "stores_by_owner_name" in plans[-1], plans
