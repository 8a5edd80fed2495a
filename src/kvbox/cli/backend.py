"""`kvbox migrate` and `kvbox copy`: set up a backend, and move a deployment between backends.

Both work on the backend contracts (rows and bytes), below the service layer: a copy keeps
ids, tokens, counters and timestamps exactly, and moves bodies without decoding them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.cli.options import BACKEND_SETTINGS, settings_from, with_settings
from kvbox.core.errors import KvboxError
from kvbox.core.models import RecordMeta, Store, User
from kvbox.service.deployment import describe_storage as where
from kvbox.service.deployment import open_storage
from kvbox.service.settings import Settings

T = TypeVar("T")
PAGE = 500


async def _with_backend(settings: Settings, action: Callable[[MetadataIndex, BlobStore], Awaitable[T]]) -> T:
    index, blobs = open_storage(settings)
    try:
        return await action(index, blobs)
    finally:
        await index.close()
        await blobs.close()


def _run(coro: Awaitable[T]) -> T:
    async def go() -> T:
        return await coro

    try:
        return asyncio.run(go())
    except KvboxError as err:
        raise click.ClickException(err.message) from err
    except ValueError as err:  # settings that name no usable backend
        raise click.UsageError(str(err)) from err


@click.command("migrate")
@with_settings(*BACKEND_SETTINGS)
def migrate_command(**options: Any) -> None:
    """Create or upgrade the index schema (PostgreSQL); safe to run from several nodes at once.

    Run it before the first `kvbox serve` and after each upgrade. The embedded SQLite
    index migrates itself whenever it opens; for it this only reports the version.
    """
    settings = settings_from(options)
    found, now = _run(_with_backend(settings, lambda index, _: index.migrate()))
    if found == now:
        click.echo(f"Schema of {where(settings)} is current (version {now}).")
    else:
        click.echo(f"Migrated {where(settings)} from schema version {found} to {now}.")


# kvbox copy


@dataclass
class Tally:
    """What a deployment holds, with one SHA-256 over every row and body in listing order."""

    users: int = 0
    tokens: int = 0
    stores: int = 0
    grants: int = 0
    records: int = 0
    bytes: int = 0
    _digest: Any = field(default_factory=hashlib.sha256)

    def add(self, kind: str, row: object, body_sha: str = "") -> None:
        fields = dataclasses.asdict(row)  # type: ignore[call-overload]
        fields.pop("inline", None)  # the body counts through its hash, wherever it lives
        fields.pop("blob_id", None)
        line = json.dumps([kind, fields, body_sha], sort_keys=True, default=str)
        self._digest.update(line.encode() + b"\n")

    @property
    def checksum(self) -> str:
        return str(self._digest.hexdigest())

    def counts(self) -> tuple[int, ...]:
        return (self.users, self.tokens, self.stores, self.grants, self.records, self.bytes)


async def _stores_of(index: MetadataIndex, user: User) -> AsyncIterator[Store]:
    offset = 0
    while True:
        page = await index.list_stores(user.id, include_unnamed=True, offset=offset, limit=PAGE, desc=False)
        for store in page.items:
            yield store
        offset += len(page.items)
        if not page.items or offset >= page.total:
            return


async def _records_of(index: MetadataIndex, store_id: str) -> AsyncIterator[RecordMeta]:
    after: str | None = None
    while True:
        page = await index.list_keys(store_id, after=after, prefix=None, limit=PAGE)
        for item in page.items:
            meta = await index.get_record(store_id, item.key)
            if meta is not None:
                yield meta
        if not page.is_truncated:
            return
        after = page.next_key


async def _body(blobs: BlobStore, meta: RecordMeta) -> AsyncIterator[bytes]:
    if meta.blob_id is None:
        if meta.inline:
            yield meta.inline
        return
    async for chunk in await blobs.open(meta.blob_id):
        yield chunk


async def _count_keys(index: MetadataIndex, store_id: str) -> int:
    n, after = 0, None
    while True:
        page = await index.list_keys(store_id, after=after, prefix=None, limit=PAGE)
        n += len(page.items)
        if not page.is_truncated:
            return n
        after = page.next_key


async def _copy_record(meta: RecordMeta, src: BlobStore, dst: BlobStore) -> tuple[RecordMeta, str]:
    """The row to write on the target (with a new blob id) and the body's SHA-256."""
    sha = hashlib.sha256()
    writer = await dst.create() if meta.blob_id is not None else None
    try:
        async for chunk in _body(src, meta):
            sha.update(chunk)
            if writer is not None:
                await writer.write(chunk)
        blob_id = await writer.commit() if writer is not None else None
    except BaseException:
        if writer is not None:
            await writer.abort()
        raise
    return dataclasses.replace(meta, blob_id=blob_id), sha.hexdigest()


async def copy_deployment(src: tuple[MetadataIndex, BlobStore], dst: tuple[MetadataIndex, BlobStore],
                          report: Callable[[str], None]) -> Tally:  # fmt: skip
    """Copy every user, token, store, grant and record from `src` into the empty `dst`."""
    (s_index, s_blobs), (d_index, d_blobs) = src, dst
    if await d_index.list_users():
        raise click.ClickException("The target already has users: copy only into an empty deployment.")
    tally = Tally()
    users = await s_index.list_users()
    for user in users:
        await d_index.insert_user(user)
        tally.users += 1
        tally.add("user", user)
        for token in await s_index.list_tokens(user.id):
            await d_index.insert_token(token)
            tally.tokens += 1
            tally.add("token", token)
    for user in users:
        async for store in _stores_of(s_index, user):
            # put_record counts each write and adds each size: start from the source's
            # counters less what the copied records will add, so they end up exactly equal.
            n = await _count_keys(s_index, store.id)
            stats = dataclasses.replace(store.stats, write_count=store.stats.write_count - n, storage_bytes=0)
            await d_index.insert_store(dataclasses.replace(store, stats=stats, record_count=0))
            for grant in await s_index.list_grants(store.id):
                await d_index.set_grant(grant)
                tally.grants += 1
                tally.add("grant", grant)
            async for meta in _records_of(s_index, store.id):
                row, body_sha = await _copy_record(meta, s_blobs, d_blobs)
                await d_index.put_record(store.id, row)
                tally.records += 1
                tally.bytes += meta.size
                tally.add("record", meta, body_sha)
            tally.stores += 1
            tally.add("store", store)
            report(f"Copied {tally.stores} stores, {tally.records} records")
    return tally


async def fingerprint(index: MetadataIndex, blobs: BlobStore) -> Tally:
    """Walk a deployment in the order `copy_deployment` does and tally it."""
    tally = Tally()
    users = await index.list_users()
    for user in users:
        tally.users += 1
        tally.add("user", user)
        for token in await index.list_tokens(user.id):
            tally.tokens += 1
            tally.add("token", token)
    for user in users:
        async for store in _stores_of(index, user):
            for grant in await index.list_grants(store.id):
                tally.grants += 1
                tally.add("grant", grant)
            async for meta in _records_of(index, store.id):
                sha = hashlib.sha256()
                async for chunk in _body(blobs, meta):
                    sha.update(chunk)
                tally.records += 1
                tally.bytes += meta.size
                tally.add("record", meta, sha.hexdigest())
            tally.stores += 1
            tally.add("store", await index.get_store(store.id))
    return tally


def _side(specs: tuple[str, ...]) -> Settings:
    """Backend settings from `--from`/`--to` values: NAME=VALUE pairs (names as in
    `kvbox serve --help`), or a bare postgresql:// URL, s3:// URL or data directory."""
    values: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if sep and name.replace("-", "_") in BACKEND_SETTINGS:
            values[name.replace("-", "_")] = value
        elif spec.startswith(("postgresql://", "postgres://")):
            values["metadata_url"] = spec
        elif spec.startswith("s3://"):
            values["blob_url"] = spec
        elif sep:
            raise click.BadParameter(f"{name!r} is not a backend setting ({', '.join(BACKEND_SETTINGS)})")
        else:
            values["data_dir"] = spec
    try:
        settings = Settings.from_env({}, **values)  # only what is given: KVBOX_* variables would blur the sides
    except (TypeError, ValueError) as err:
        raise click.UsageError(str(err)) from err
    if settings.backend == "memory":
        raise click.UsageError("The memory backend holds nothing to copy.")
    return settings


_SIDE_HELP = "A backend setting NAME=VALUE, a postgresql:// or s3:// URL, or a data directory (repeatable)."


@click.command("copy")
@click.option("--from", "source", multiple=True, required=True, metavar="SETTING", help=_SIDE_HELP)
@click.option("--to", "target", multiple=True, required=True, metavar="SETTING", help=_SIDE_HELP)
def copy_command(source: tuple[str, ...], target: tuple[str, ...]) -> None:
    """Copy all users, tokens, stores and records from one backend into another, empty one,
    then read the target back and compare counts and checksums.

    Stop the servers of the source first. Example, embedded to scale-out and back:

        kvbox migrate --metadata-url postgresql://kv@db/kv --blob-url s3://bucket/kv

        kvbox copy --from ./kvbox-data --to postgresql://kv@db/kv --to s3://bucket/kv

        kvbox copy --from postgresql://kv@db/kv --from s3://bucket/kv --to ./restored
    """
    src, dst = _side(source), _side(target)
    console = Console(stderr=True)

    async def go() -> tuple[Tally, Tally]:
        async def with_target(s_index: MetadataIndex, s_blobs: BlobStore) -> tuple[Tally, Tally]:
            async def both(d_index: MetadataIndex, d_blobs: BlobStore) -> tuple[Tally, Tally]:
                await d_index.migrate()
                with console.status("Copying") as status:
                    copied = await copy_deployment((s_index, s_blobs), (d_index, d_blobs), status.update)
                    status.update("Reading the target back")
                    return copied, await fingerprint(d_index, d_blobs)

            return await _with_backend(dst, both)

        return await _with_backend(src, with_target)

    copied, check = _run(go())
    table = Table("", "users", "tokens", "stores", "grants", "records", "bytes", "sha256")
    table.add_row(f"from {where(src)}", *map(str, copied.counts()), copied.checksum)
    table.add_row(f"to {where(dst)}", *map(str, check.counts()), check.checksum)
    Console().print(table)
    if (copied.counts(), copied.checksum) != (check.counts(), check.checksum):
        raise click.ClickException("The target does not match the source.")
    click.echo("Verified: the target matches the source.")
