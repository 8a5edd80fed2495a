"""What only the scale-out backend has: a versioned PostgreSQL schema shared by many
processes, advisory locks, and bodies as S3 objects uploaded in parts."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.adapt import PyFormat, Transformer

from backends.conftest import postgres_index, s3_blobs
from backing_services import ScaleOut
from kvbox.backends.postgres.metadata import (
    _READ_AS_BY_ID,
    _READ_AS_BY_OWN_NAME,
    _READ_AS_BY_OWNER,
    _SQL,
    PostgresMetadataIndex,
)
from kvbox.backends.postgres.schema import MIGRATIONS, SCHEMA_VERSION, migrate
from kvbox.backends.registry import backend_kind, describe_url, open_backend
from kvbox.backends.rows import RECORD_COLUMNS, STORE_COLUMNS, record_values, store_values
from kvbox.backends.s3.blobs import MAX_UPLOAD_MS, S3BlobStore, parse_blob_url
from kvbox.core.errors import NameNotUniqueError, PreconditionFailedError, StorageError
from kvbox.core.ids import new_blob_name, new_id, new_secret
from kvbox.core.models import Condition, RecordMeta, Store, User, Visibility

pytestmark = pytest.mark.anyio

T0 = 1_767_225_600_000
MiB = 1 << 20


def make_store(name: str | None = None) -> Store:
    return Store(id=new_id(), name=name, user_id="user1", created_at=T0, modified_at=T0, accessed_at=T0,
                 url_signing_secret=new_secret())  # fmt: skip


def rec(key: str, body: bytes = b"body", *, blob_id: str | None = None) -> RecordMeta:
    return RecordMeta(key=key, content_type="text/plain", encoding="identity", size=len(body), etag='"e"',
                      modified_at=T0, inline=None if blob_id else body, blob_id=blob_id)  # fmt: skip


# the schema


def inline_body(record: RecordMeta) -> bytes:
    """The body of a record kept in the index (it must be one)."""
    assert record.inline is not None, record.key
    return record.inline


async def test_migrations_from_many_processes_at_once(scale_out: ScaleOut) -> None:
    url = scale_out.settings()["metadata_url"]
    racers = [PostgresMetadataIndex(url) for _ in range(6)]
    results = await asyncio.gather(*(ix.migrate() for ix in racers))
    assert sorted(found for found, _ in results) == [0, *[SCHEMA_VERSION] * 5]  # exactly one did the work
    assert {now for _, now in results} == {SCHEMA_VERSION}
    await racers[0].insert_user(User(id="u1", username="ann", created_at=T0))
    assert await racers[1].migrate() == (SCHEMA_VERSION, SCHEMA_VERSION)  # idempotent, data kept
    assert await racers[2].get_user("u1") is not None
    for ix in racers:
        await ix.close()


async def test_unmigrated_and_newer_schemas_are_refused(scale_out: ScaleOut) -> None:
    url = scale_out.settings()["metadata_url"]
    fresh = PostgresMetadataIndex(url)
    with pytest.raises(StorageError, match="kvbox migrate"):
        await fresh.get_user("u1")
    await fresh.migrate()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("INSERT INTO kvbox_schema (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    newer = PostgresMetadataIndex(url)
    with pytest.raises(StorageError, match="understands up to"):
        await newer.get_user("u1")
    with pytest.raises(StorageError, match="understands up to"):
        await newer.migrate()
    await fresh.close()
    await newer.close()


async def test_a_version_1_schema_is_upgraded_with_its_records(scale_out: ScaleOut) -> None:
    """The lifecycle migration keeps every record (no own expiry, seq 0) and swaps
    kvbox_put_record for the version that takes an expiry."""
    url = scale_out.settings()["metadata_url"]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        for statement in MIGRATIONS[0]:
            await conn.execute(statement)
        await conn.execute("CREATE TABLE kvbox_schema (version integer NOT NULL)")
        await conn.execute("INSERT INTO kvbox_schema (version) VALUES (1)")
        await conn.execute(
            "INSERT INTO stores (id, name, user_id, created_at, modified_at, accessed_at, url_signing_secret, "
            "general_access, write_count, storage_bytes, record_count) "
            "VALUES ('s1', 'old', 'u1', %s, %s, %s, 'secret', 'RESTRICTED', 1, 1, 1)",
            (T0, T0, T0),
        )
        await conn.execute(
            "SELECT * FROM kvbox_put_record('s1', 'a-1', 'text/plain', 'identity', 1, 'e', %s, 'x', NULL)", (T0,)
        )
    index = PostgresMetadataIndex(url)
    assert await index.migrate() == (1, SCHEMA_VERSION)
    old = await index.get_record("s1", "a-1")
    assert old is not None and old.expires_at is None and old.inline == b"x"
    await index.put_record("s1", dataclasses.replace(rec("b-1"), expires_at=T0 + 5))
    page = await index.list_keys("s1", after=None, prefix=None, limit=10, visible=Visibility(T0))
    assert [(i.key, i.expires_at) for i in page.items] == [("a-1", None), ("b-1", T0 + 5)]
    assert await index.delete_prefix("s1", "a-", visible=Visibility(T0)) == 1
    assert await index.get_record("s1", "a-1") is None
    await index.close()


async def test_unreachable_database_raises_storage_error(scale_out: ScaleOut) -> None:
    index = PostgresMetadataIndex(f"postgresql://kvbox@127.0.0.1:{scale_out.pg.port}/no_such_database")
    with pytest.raises(StorageError) as caught:
        await index.get_user("u1")
    assert isinstance(caught.value.__cause__, psycopg.Error)
    await index.close()


async def test_corrupt_rows_raise_storage_error_with_cause(scale_out: ScaleOut) -> None:
    index = await postgres_index(scale_out)
    store = make_store("broken")
    await index.insert_store(store)
    async with await psycopg.AsyncConnection.connect(index.url, autocommit=True) as conn:
        await conn.execute("UPDATE stores SET general_access = 'NOT_A_LEVEL'")
    with pytest.raises(StorageError) as caught:
        await index.get_store(store.id)
    assert isinstance(caught.value.__cause__, ValueError)
    await index.close()


def test_put_record_function_speaks_the_record_row_shape() -> None:
    """The index passes a record to kvbox_put_record and decodes the replaced one it returns
    by the position of RECORD_COLUMNS: the function's parameters and result keep that order.
    The current function (the last one defined) takes the condition and the time it is
    judged at after the record, and says first whether it refused."""
    function = [s for m in MIGRATIONS for s in m if "CREATE FUNCTION kvbox_put_record(" in s][-1]  # the latest
    columns = RECORD_COLUMNS.split(", ")
    parameters = re.findall(r"\b(p_\w+) \w+", function.split(") RETURNS")[0])
    assert parameters[len(columns) + 1 :] == [
        "p_if_match", "p_if_none_match", "p_must_exist", "p_must_not_exist", "p_now", "p_stale_before"
    ]  # fmt: skip
    inserted = re.search(r"INSERT INTO records AS r \((.*?)\)\s+VALUES \((.*?)\)", function, re.S)
    returned = re.findall(r"RETURN QUERY SELECT (.*?);", function, re.S)[-1]
    assert inserted is not None
    # `seq` comes last, from the store's write count (v_seq); p_store selects v_pk.
    assert re.split(r",\s*", inserted.group(1)) == ["store_pk", *columns, "seq"]
    assert re.split(r",\s*", inserted.group(2)) == ["v_pk", *parameters[1 : len(columns) + 1], "v_seq"]
    assert returned.startswith("false, v_old.key IS NOT NULL,")  # not refused; whether a row was replaced
    assert re.findall(r"v_old\.(\w+)", returned) == columns


async def test_migration_from_version_1_keeps_data_and_adds_conditional_writes(scale_out: ScaleOut) -> None:
    """A database that an earlier release migrated to version 1, with records in it, is
    upgraded by `kvbox migrate`; records written before stay, and conditional writes work."""
    url = scale_out.settings()["metadata_url"]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        assert await migrate(conn, up_to=1) == 0
    old_node = PostgresMetadataIndex(url)
    with pytest.raises(StorageError, match="kvbox migrate"):  # this release refuses version 1
        await old_node.get_store("x")
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        store = make_store("kept")
        # The store as a version-1 node inserts it: every column but the later `record_expiry`.
        columns = STORE_COLUMNS.split(", ")[:-1]
        placeholders = ", ".join(["%s"] * len(columns))
        await conn.execute(f"INSERT INTO stores ({', '.join(columns)}) VALUES ({placeholders})",
                           store_values(store)[:-1])  # fmt: skip
        # What a version-1 node writes: the function of version 1, 9 arguments (no expiry).
        await conn.execute("SELECT * FROM kvbox_put_record(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                           (store.id, *record_values(rec("old", b"before"))[:8]))  # fmt: skip
    index = PostgresMetadataIndex(url)
    assert await index.migrate() == (1, SCHEMA_VERSION)
    old = await index.get_record(store.id, "old")
    assert old is not None and inline_body(old) == b"before"
    with pytest.raises(PreconditionFailedError):
        await index.put_record(store.id, rec("old", b"after"), condition=Condition(must_not_exist=True))
    assert await index.put_record(store.id, rec("old", b"after"), condition=Condition(if_match=(old.etag,))) == old
    # Version 3 drops the earlier functions: a node of an earlier release cannot write rows
    # without `seq`, which a delete by prefix would wrongly hide.
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedFunction):
            await conn.execute("SELECT * FROM kvbox_put_record(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                               (store.id, *record_values(rec("older-node", b"x"))[:8]))  # fmt: skip
    s = await index.get_store(store.id)
    assert s is not None and (s.record_count, s.stats.write_count) == (1, 2)
    for ix in (old_node, index):
        await ix.close()


async def test_key_listing_is_a_range_scan_of_the_primary_key(scale_out: ScaleOut) -> None:
    index = await postgres_index(scale_out)
    store = make_store()
    await index.insert_store(store)
    sql, params = _SQL.list_keys(store.id, after="a", prefix="a", limit=10, visible=Visibility(T0))
    async with await psycopg.AsyncConnection.connect(index.url, autocommit=True) as conn:
        await conn.execute("SET enable_seqscan = off")
        cur = await conn.execute("EXPLAIN " + sql, params)
        plan = " | ".join(row[0] for row in await cur.fetchall())
    assert "Index Scan using records_key" in plan and "Sort" not in plan, plan
    await index.close()


def _rows(result: psycopg.pq.abc.PGresult) -> list[list[bytes | None]]:
    return [[result.get_value(r, c) for c in range(result.nfields)] for r in range(result.ntuples)]


async def test_a_record_read_for_several_callers_at_once_gives_each_the_row_it_gets_alone(
    scale_out: ScaleOut,
) -> None:
    """Each record read statement's `many` (the reads of one batch in one statement, see
    pipeline.py) runs, and answers every set of parameters with the row its own statement gives."""
    index = await postgres_index(scale_out)
    await index.insert_user(User(id="user1", username="ann", created_at=T0))
    store = make_store("shared")
    await index.insert_store(store)
    for key in ("k1", "NULL", 'a "quoted", {braced} key'):
        await index.put_record(store.id, rec(key, key.encode()))
    keys = ("k1", "NULL", 'a "quoted", {braced} key', "missing")
    sets = {
        _READ_AS_BY_ID: [{"hash": None, "user": "user1", "store": s, "key": k}
                         for s in (store.id, "nope") for k in keys],
        _READ_AS_BY_OWN_NAME: [{"hash": "h" * 64, "user": None, "name": "shared", "key": k} for k in keys]
        + [{"hash": None, "user": "user1", "name": n, "key": k} for n in ("shared", "other") for k in keys],
        _READ_AS_BY_OWNER: [{"hash": None, "user": None, "owner": o, "name": "shared", "key": k}
                            for o in ("ann", "user1", "bob") for k in keys],
    }  # fmt: skip
    with psycopg.connect(index.url, autocommit=True) as conn:
        dump = Transformer(conn)

        def run(sql: bytes, values: list[Any]) -> list[list[bytes | None]]:
            result = conn.pgconn.exec_params(sql, dump.dump_sequence(values, [PyFormat.TEXT] * len(values)))
            assert result.status == psycopg.pq.ExecStatus.TUPLES_OK, result.error_message
            return _rows(result)

        for statement, params in sets.items():
            assert statement.many is not None and statement.names is not None
            alone = [run(statement.sql, list(statement.values(p)))[0] for p in params]
            arrays = {name: [p[name] for p in params] for name in statement.names}
            together = run(statement.many.sql, list(statement.many.values(arrays)))
            assert [row[0] for row in together] == [str(n).encode() for n in range(1, len(params) + 1)]
            assert [row[1:] for row in together] == alone
            assert sum(row[-9] is not None for row in alone) >= 3  # records found, by key
    await index.close()


# many processes on one database


async def test_two_instances_see_each_others_commits(scale_out: ScaleOut) -> None:
    a = await postgres_index(scale_out)
    b = PostgresMetadataIndex(a.url)
    store = make_store("shared")
    await a.insert_store(store)
    await b.put_record(store.id, rec("k1"))
    assert await a.get_record(store.id, "k1") == rec("k1")
    await a.delete_record(store.id, "k1", now_ms=T0 + 1)
    assert await b.get_record(store.id, "k1") is None
    with pytest.raises(NameNotUniqueError):
        await b.insert_store(make_store("shared"))
    await b.delete_store(store.id)
    assert await a.get_store(store.id) is None
    with pytest.raises(StorageError):
        await a.put_record(store.id, rec("k2"))
    await a.close()
    await b.close()


async def test_concurrent_writers_of_one_key_keep_counts_exact(scale_out: ScaleOut) -> None:
    nodes = [await postgres_index(scale_out, pool_size=8)]
    nodes.append(PostgresMetadataIndex(nodes[0].url, pool_size=8))
    store = make_store()
    await nodes[0].insert_store(store)
    bodies = [bytes([i]) * (i + 1) for i in range(40)]
    replaced = await asyncio.gather(*(nodes[i % 2].put_record(store.id, rec("k", b)) for i, b in enumerate(bodies)))
    assert replaced.count(None) == 1  # exactly one writer created the row; each other replaced one
    final = await nodes[1].get_record(store.id, "k")
    assert final is not None and final.inline in bodies
    # every body but the final one was replaced exactly once: no lost update
    assert sorted(inline_body(r) for r in replaced if r is not None) == sorted(b for b in bodies if b != final.inline)
    s = await nodes[0].get_store(store.id)
    assert s is not None
    assert (s.record_count, s.stats.write_count, s.stats.storage_bytes) == (1, 40, final.size)
    for ix in nodes:
        await ix.close()


async def test_concurrent_writes_and_deletes_of_one_key_never_deadlock(scale_out: ScaleOut) -> None:
    nodes = [await postgres_index(scale_out, pool_size=8)]
    nodes.append(PostgresMetadataIndex(nodes[0].url, pool_size=8))
    store = make_store()
    await nodes[0].insert_store(store)

    async def churn(i: int) -> None:
        node = nodes[i % 2]
        for n in range(15):
            if (i + n) % 3:
                await node.put_record(store.id, rec("k", b"v" * (i + n + 1)))
            else:
                await node.delete_record(store.id, "k", now_ms=T0 + n)

    await asyncio.wait_for(asyncio.gather(*(churn(i) for i in range(12))), timeout=60)
    final = await nodes[0].get_record(store.id, "k")
    s = await nodes[1].get_store(store.id)
    assert s is not None
    assert (s.record_count, s.stats.storage_bytes) == ((1, final.size) if final else (0, 0))
    assert s.stats.write_count + s.stats.delete_count == 12 * 15
    for ix in nodes:
        await ix.close()


async def test_two_nodes_purging_free_each_blob_once(scale_out: ScaleOut) -> None:
    a = await postgres_index(scale_out)
    b = PostgresMetadataIndex(a.url)
    store = make_store()
    await a.insert_store(store)
    blob_ids = [new_blob_name() for _ in range(60)]
    for i, blob_id in enumerate(blob_ids):
        await a.put_record(store.id, rec(f"k{i}", b"x" * 10, blob_id=blob_id))
    await a.delete_store(store.id)
    freed: list[str] = []
    while await a.purge_pending():
        batches = await asyncio.gather(a.purge_deleted(max_rows=7), b.purge_deleted(max_rows=7))
        freed += [blob_id for batch in batches for blob_id in batch]
    assert sorted(freed) == sorted(blob_ids)
    await a.close()
    await b.close()


async def test_advisory_lock_admits_one_node(scale_out: ScaleOut) -> None:
    a = await postgres_index(scale_out)
    b = PostgresMetadataIndex(a.url)
    elsewhere = await postgres_index(scale_out)  # another deployment in another schema
    async with a.exclusive("sweeper") as first:
        async with b.exclusive("sweeper") as second, elsewhere.exclusive("sweeper") as other:
            assert (first, second, other) == (True, False, True)
        async with b.exclusive("other-job") as different:
            assert different is True
    async with b.exclusive("sweeper") as after_release:
        assert after_release is True
    for ix in (a, b, elsewhere):
        await ix.close()


# bodies in S3


async def test_large_body_goes_up_in_parts_and_streams_back(scale_out: ScaleOut) -> None:
    blobs = s3_blobs(scale_out, part_size=5 * MiB, chunk_size=MiB)
    body = bytes(range(256)) * (11 * MiB // 256 + 3)
    writer = await blobs.create()
    for i in range(0, len(body), 300_000):
        await writer.write(body[i : i + 300_000])
    blob_id = await writer.commit()
    s3 = await blobs.client()
    head = await s3.head_object(Bucket=blobs.bucket, Key=blobs.key_of(blob_id))
    assert head["ContentLength"] == len(body) and head["ETag"].endswith('-3"')  # three parts
    chunks = [c async for c in await blobs.open(blob_id)]
    assert b"".join(chunks) == body and max(map(len, chunks)) <= MiB
    await blobs.close()


async def test_aborted_and_stale_uploads_leave_nothing(scale_out: ScaleOut) -> None:
    blobs = s3_blobs(scale_out, part_size=5 * MiB)
    s3 = await blobs.client()

    async def uploads() -> list[int]:
        """Start times of the uploads in progress (moto reports a fixed date in 2010)."""
        page = await s3.list_multipart_uploads(Bucket=blobs.bucket, Prefix=blobs.prefix)
        return [int(u["Initiated"].timestamp() * 1000) for u in page.get("Uploads", [])]

    aborted = await blobs.create()
    await aborted.write(b"x" * (6 * MiB))
    assert len(await uploads()) == 1
    await aborted.abort()
    assert await uploads() == []

    crashed = await blobs.create()  # a writer that dies mid-upload
    await crashed.write(b"y" * (6 * MiB))
    (started,) = await uploads()
    assert [b async for b in blobs.list_ids(older_than_ms=started + MAX_UPLOAD_MS - 60_000)] == []
    assert len(await uploads()) == 1  # it may still be running: left alone
    assert [b async for b in blobs.list_ids(older_than_ms=started + MAX_UPLOAD_MS + 60_000)] == []
    assert len(await uploads()) == 1  # S3 dates it a day old, but it was first seen 2 minutes ago
    assert [b async for b in blobs.list_ids(older_than_ms=started + 2 * MAX_UPLOAD_MS)] == []
    assert await uploads() == []  # seen in progress for longer than any upload may take: aborted
    await blobs.close()


async def test_an_upload_that_s3_misdates_is_not_aborted_while_it_runs(scale_out: ScaleOut) -> None:
    blobs = s3_blobs(scale_out, part_size=5 * MiB)
    s3 = await blobs.client()
    writer = await blobs.create()
    await writer.write(b"a" * (6 * MiB))
    page = await s3.list_multipart_uploads(Bucket=blobs.bucket, Prefix=blobs.prefix)
    (upload,) = page["Uploads"]
    now = int(time.time() * 1000)
    assert upload["Initiated"].timestamp() * 1000 < now - MAX_UPLOAD_MS  # moto's fixed date in 2010
    for _ in range(3):  # the cleanup pass of a node, as often as it may run
        assert [b async for b in blobs.list_ids(older_than_ms=now)] == []
    await writer.write(b"b" * (6 * MiB))
    blob_id = await writer.commit()
    body = b"".join([c async for c in await blobs.open(blob_id)])
    assert body == b"a" * (6 * MiB) + b"b" * (6 * MiB)
    await blobs.close()


async def test_multipart_objects_are_dated_by_upload_start(scale_out: ScaleOut) -> None:
    blobs = s3_blobs(scale_out, part_size=5 * MiB)
    small = await blobs.create()
    await small.write(b"small")
    small_id = await small.commit()
    big = await blobs.create()
    await big.write(b"z" * (6 * MiB))
    big_id = await big.commit()
    soon = int(time.time() * 1000) + 60_000
    assert [b async for b in blobs.list_ids(older_than_ms=soon)] == [small_id]
    later = [b async for b in blobs.list_ids(older_than_ms=soon + MAX_UPLOAD_MS)]
    assert sorted(later) == sorted([small_id, big_id])
    await blobs.close()


async def test_foreign_objects_and_bad_ids_are_ignored(scale_out: ScaleOut) -> None:
    blobs = s3_blobs(scale_out)
    s3 = await blobs.client()
    await s3.put_object(Bucket=blobs.bucket, Key=blobs.prefix + "README.txt", Body=b"not a blob")
    await s3.put_object(Bucket=blobs.bucket, Key=blobs.prefix + "sub/" + new_blob_name(), Body=b"nested")
    assert [b async for b in blobs.list_ids(older_than_ms=2**62)] == []
    for bad in ("../etc/passwd", "ABCDEF0123456789ABCDEF0123456789", "", "sub/" + new_blob_name()):
        with pytest.raises(StorageError):
            await blobs.open(bad)
        with pytest.raises(StorageError):
            await blobs.delete(bad)
    await blobs.close()


async def test_a_dropped_stream_resumes_from_the_same_object(
    scale_out: ScaleOut, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ResponseStreamingError

    blobs = s3_blobs(scale_out, chunk_size=1000)
    body = bytes(range(256)) * 40
    writer = await blobs.create()
    await writer.write(body)
    blob_id = await writer.commit()
    ranges: list[str | None] = []
    real_get = S3BlobStore._get

    async def flaky_get(self: S3BlobStore, key: str, blob_id: str, **extra: str) -> object:
        ranges.append(extra.get("Range"))
        response = await real_get(self, key, blob_id, **extra)
        if len(ranges) == 1:
            real_iter = response["Body"].iter_chunks

            async def breaks_after_two(chunk_size: int) -> AsyncIterator[bytes]:
                n = 0
                async for chunk in real_iter(chunk_size):
                    yield chunk
                    n += 1
                    if n == 2:
                        raise ResponseStreamingError(error="connection reset")

            response["Body"].iter_chunks = breaks_after_two
        return response

    monkeypatch.setattr(S3BlobStore, "_get", flaky_get)
    assert b"".join([c async for c in await blobs.open(blob_id)]) == body
    assert ranges == [None, "bytes=2000-"]
    await blobs.close()


async def test_missing_bucket_raises_storage_error(scale_out: ScaleOut) -> None:
    blobs = S3BlobStore("no-such-bucket-kvbox", "", endpoint=scale_out.s3.endpoint)
    writer = await blobs.create()
    await writer.write(b"data")
    with pytest.raises(StorageError):
        await writer.commit()
    await blobs.close()


# settings


def test_blob_urls() -> None:
    assert parse_blob_url("s3://bucket") == ("bucket", "")
    assert parse_blob_url("s3://bucket/") == ("bucket", "")
    assert parse_blob_url("s3://bucket/a/b/") == ("bucket", "a/b/")
    for bad in ("bucket/prefix", "https://bucket/x", "s3:///prefix"):
        with pytest.raises(ValueError):
            parse_blob_url(bad)


def test_backend_selection(tmp_path: Path) -> None:
    pg, s3 = "postgresql://u@h/db", "s3://b/p"
    assert backend_kind("sqlite") == "sqlite"
    assert backend_kind("sqlite", metadata_url=pg, blob_url=s3) == "postgres"
    assert backend_kind("postgres", metadata_url="postgres://u@h/db", blob_url=s3) == "postgres"
    for kind, url, blob in [("postgres", None, s3), ("sqlite", pg, None), ("sqlite", "mysql://h/db", s3),
                            ("memory", pg, s3), ("sqlite", pg, "gs://b"), ("oracle", None, None)]:  # fmt: skip
        with pytest.raises(ValueError):
            backend_kind(kind, metadata_url=url, blob_url=blob)
    index, blobs = open_backend("sqlite", data_dir=tmp_path, durable=False, metadata_url=pg, blob_url=s3)
    assert isinstance(index, PostgresMetadataIndex) and isinstance(blobs, S3BlobStore)
    assert describe_url("postgresql://kv:s3cret@db:5432/kv") == "postgresql://kv:***@db:5432/kv"
    assert describe_url("postgresql://kv@db/kv") == "postgresql://kv@db/kv"
