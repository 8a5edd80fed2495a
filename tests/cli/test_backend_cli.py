"""`kvbox migrate` and `kvbox copy` run as real commands against PostgreSQL + S3 and SQLite."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from backing_services import AWS_TEST_ENV, ScaleOut, scale_out_env
from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.backends.postgres.schema import SCHEMA_VERSION
from kvbox.backends.registry import open_backend
from kvbox.core.ids import new_id, new_secret
from kvbox.core.models import (
    GeneralAccess,
    Grant,
    Permission,
    RecordMeta,
    StatsDelta,
    Store,
    StoreStats,
    Token,
    User,
)
from kvbox.service.copy import fingerprint

T0 = 1_767_225_600_000
BIG = os.urandom(200 * 1024)

T = TypeVar("T")


def kvbox(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KVBOX_")}
    return subprocess.run(
        [sys.executable, "-m", "kvbox.cli", *args], env={**clean, **AWS_TEST_ENV, **(env or {})},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def sqlite(data_dir: Path) -> tuple[MetadataIndex, BlobStore]:
    return open_backend("sqlite", data_dir=data_dir, durable=False)


def scale_out_backend(env: dict[str, str]) -> tuple[MetadataIndex, BlobStore]:
    return open_backend(
        "sqlite", data_dir=Path("unused"), durable=False, metadata_url=env["KVBOX_METADATA_URL"],
        blob_url=env["KVBOX_BLOB_URL"], s3_endpoint=env["KVBOX_S3_ENDPOINT"],
    )  # fmt: skip


def side(env: dict[str, str]) -> list[str]:
    """`--from`/`--to` values naming a scale-out deployment."""
    return [env["KVBOX_METADATA_URL"], env["KVBOX_BLOB_URL"], f"s3-endpoint={env['KVBOX_S3_ENDPOINT']}"]


def flags(option: str, values: list[str]) -> list[str]:
    return [arg for value in values for arg in (option, value)]


async def populate(index: MetadataIndex, blobs: BlobStore) -> None:
    """Every kind of row: users, scoped tokens, stores with schema and counters, a grant,
    inline, empty and blob records with encodings, and a deleted store not yet purged."""
    ann = User(id="u-ann", username="ann", created_at=T0, default_general_access=GeneralAccess.ANYONE_WITH_ID_CAN_READ)
    bob = User(id="u-bob", username="bob", created_at=T0 + 1)
    for user in (ann, bob):
        await index.insert_user(user)
    named = Store(id=new_id(), name="docs", user_id=ann.id, created_at=T0, modified_at=T0, accessed_at=T0 + 5,
                  url_signing_secret=new_secret(), general_access=GeneralAccess.RESTRICTED, title="Docs",
                  schema={"actorKeyValueStoreSchemaVersion": 1, "title": "s"},
                  stats=StoreStats(read_count=7, write_count=40, delete_count=2, list_count=3))  # fmt: skip
    unnamed = Store(id=new_id(), name=None, user_id=ann.id, created_at=T0 + 2, modified_at=T0 + 2,
                    accessed_at=T0 + 2, url_signing_secret=new_secret())  # fmt: skip
    bobs = Store(id=new_id(), name="docs", user_id=bob.id, created_at=T0, modified_at=T0, accessed_at=T0,
                 url_signing_secret=new_secret())  # fmt: skip
    doomed = dataclasses.replace(bobs, id=new_id(), name="doomed")
    for store in (named, unnamed, bobs, doomed):
        await index.insert_store(store)
    await index.insert_token(Token(id="t1", user_id=ann.id, token_hash="h1", name="default", created_at=T0))
    await index.insert_token(Token(id="t2", user_id=ann.id, token_hash="h2", name="ci", created_at=T0 + 1,
                                   read_only=True, store_ids=(named.id,)))  # fmt: skip
    await index.insert_token(Token(id="t3", user_id=bob.id, token_hash="h3", name="default", created_at=T0))
    await index.set_grant(Grant(store_id=named.id, user_id=bob.id, permission=Permission.WRITE, created_at=T0 + 3))
    writer = await blobs.create()
    await writer.write(BIG)
    blob_id = await writer.commit()
    rows = [
        (named, RecordMeta("INPUT", "application/json; charset=utf-8", "identity", 13, '"e1"', T0, b'{"a": [1, 2]}')),
        (named, RecordMeta("big", "application/octet-stream", "gzip", len(BIG), '"e2"', T0 + 1, blob_id=blob_id)),
        (named, RecordMeta("empty", "text/plain", "identity", 0, '"e3"', T0, b"")),
        (bobs, RecordMeta("k", "text/plain", "br", 3, '"e4"', T0, b"abc")),
        (doomed, RecordMeta("gone", "text/plain", "identity", 3, '"e5"', T0, b"xyz")),
    ]
    for store, row in rows:
        await index.put_record(store.id, row)
    await index.apply_stats({unnamed.id: StatsDelta(reads=4, lists=1, accessed_at=T0 + 9)})
    await index.delete_store(doomed.id)


async def snapshot(index: MetadataIndex, blobs: BlobStore) -> dict[str, object]:
    """Everything a deployment holds, blob ids replaced by the bodies they name."""
    users = await index.list_users()
    out: dict[str, object] = {"users": users}
    for user in users:
        out[f"tokens {user.id}"] = await index.list_tokens(user.id)
        page = await index.list_stores(user.id, include_unnamed=True, offset=0, limit=100, desc=False)
        out[f"stores {user.id}"] = page.items
        for store in page.items:
            out[f"grants {store.id}"] = await index.list_grants(store.id)
            keys = await index.list_keys(store.id, after=None, prefix=None, limit=100)
            for item in keys.items:
                row = await index.get_record(store.id, item.key)
                assert row is not None
                body = b"".join([c async for c in await blobs.open(row.blob_id)]) if row.blob_id else row.inline
                out[f"record {store.id} {item.key}"] = (dataclasses.replace(row, inline=None, blob_id=None), body)
    return out


async def closing(
    backend: tuple[MetadataIndex, BlobStore], action: Callable[[MetadataIndex, BlobStore], Awaitable[T]]
) -> T:
    try:
        return await action(*backend)
    finally:
        await backend[0].close()
        await backend[1].close()


@pytest.mark.slow
def test_copy_embedded_to_scale_out_and_back(scale_out: ScaleOut, tmp_path: Path) -> None:
    source = tmp_path / "source"
    asyncio.run(closing(sqlite(source), populate))
    before = asyncio.run(closing(sqlite(source), snapshot))
    target = scale_out_env(scale_out.pg.create_database(), scale_out.blob_url(), scale_out.s3.endpoint)

    out = kvbox("copy", "--from", str(source), *flags("--to", side(target)))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Verified: the target matches the source." in out.stdout
    assert asyncio.run(closing(scale_out_backend(target), snapshot)) == before

    again = kvbox("copy", "--from", str(source), *flags("--to", side(target)))
    assert again.returncode != 0 and "already has users" in again.stderr

    back = tmp_path / "back"
    out = kvbox("copy", *flags("--from", side(target)), "--to", f"data-dir={back}")
    assert out.returncode == 0, out.stdout + out.stderr
    assert asyncio.run(closing(sqlite(back), snapshot)) == before
    sums = [asyncio.run(closing(backend, fingerprint)).checksum for backend in (sqlite(source), sqlite(back))]
    assert sums[0] == sums[1]


def test_copy_refuses_bad_sides(tmp_path: Path) -> None:
    out = kvbox("copy", "--from", str(tmp_path / "a"), "--to", "colour=blue")
    assert out.returncode != 0 and "not a backend setting" in out.stderr
    out = kvbox("copy", "--from", str(tmp_path / "a"), "--to", "postgresql://u@127.0.0.1:1/db")
    assert out.returncode != 0 and "--blob-url" in out.stderr


def test_migrate_then_serve_and_admin_commands(scale_out: ScaleOut, tmp_path: Path) -> None:
    env = scale_out.server_env()
    first = kvbox("migrate", env=env)
    assert first.returncode == 0, first.stderr
    assert f"from schema version 0 to {SCHEMA_VERSION}" in first.stdout and "***" not in first.stdout
    second = kvbox("migrate", env=env)
    assert second.returncode == 0 and f"is current (version {SCHEMA_VERSION})" in second.stdout
    created = kvbox("users", "create", "carol", env=env)
    assert created.returncode == 0, created.stderr
    listed = kvbox("users", "list", "--json", env=env)
    assert '"carol"' in listed.stdout

    fresh = scale_out_env(scale_out.pg.create_database(), scale_out.blob_url(), scale_out.s3.endpoint)
    refused = kvbox("serve", "--port", "0", env=fresh)  # not migrated: refuses at once
    assert refused.returncode != 0 and "kvbox migrate" in refused.stderr
    sqlite_dir = kvbox("migrate", "--data-dir", str(tmp_path / "embedded"))
    assert sqlite_dir.returncode == 0 and "is current" in sqlite_dir.stdout
