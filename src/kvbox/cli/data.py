"""The data commands: `kvbox stores ...`, `keys`, `get`, `put`, `rm`, `push` and `pull`.

Each works on a server (`--api-url`) or on a local data directory (see `cli/target.py`).
Data goes to stdout (tables, JSON with --json, record bytes), messages to stderr. Exit codes:
0 ok, 1 an error reported by the server or the backend, 2 a usage error.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import click
from rich.console import Console
from rich.table import Table

from kvbox.cli.target import (
    TARGET_HELP,
    DataError,
    KeyRow,
    RecordInfo,
    StoreRow,
    Target,
    TargetOptions,
    describe,
    find_store,
    resolve_store,
    run,
    target_options,
)
from kvbox.cli.transfer import CountingReader, Transfer, counted, run_jobs, show_progress
from kvbox.core.content import BINARY_TYPE, is_json_type, is_text_type
from kvbox.core.ids import looks_like_id
from kvbox.core.keys import validate_key

if TYPE_CHECKING:  # the folder code (and the SDK under it) loads only for push and pull
    from kvbox.cli.folder import FolderRecord, FolderStore

JOBS = 4
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _note(message: str) -> None:
    click.echo(message, err=True)


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def _records(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"


def _when(value: str | None) -> str:
    return value[:19].replace("T", " ") if value else "-"


def _missing_record(key: str, store: StoreRow) -> DataError:
    return DataError(f'Record "{key}" was not found in store {store.label} (record-not-found).')


# stores


@click.group("stores")
def stores() -> None:
    """List, create, rename, delete and describe key-value stores."""


@stores.command("ls", epilog=TARGET_HELP)
@click.option("--unnamed", is_flag=True, help="Include unnamed stores.")
@json_option
@target_options
def stores_ls(unnamed: bool, as_json: bool, target: TargetOptions) -> None:
    """List the stores you own or that are shared with you."""
    rows = run(target, lambda t: t.list_stores(unnamed=unnamed))
    if as_json:
        _echo_json([r.to_json() for r in rows])
        return
    table = Table("Name", "ID", "Owner", "Records", "Size", "Modified")
    for r in rows:
        table.add_row(
            r.name or "(unnamed)",
            r.id,
            r.username or "-",
            str(r.record_count or 0),
            human_size(r.storage_bytes),
            _when(r.modified_at),
        )
    Console().print(table)


@stores.command("create", epilog=TARGET_HELP)
@click.argument("name", required=False)
@json_option
@target_options
def stores_create(name: str | None, as_json: bool, target: TargetOptions) -> None:
    """Create a store called NAME (or an unnamed one) and print its ID; an existing NAME is kept."""
    row, created = run(target, lambda t: t.create_store(name))
    if as_json:
        _echo_json({**row.to_json(), "created": created})
        return
    _note(f"{'Created' if created else 'Already exists:'} store {row.label}.")
    click.echo(row.id)


@stores.command("rename", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("new_name")
@json_option
@target_options
def stores_rename(store: str, new_name: str, as_json: bool, target: TargetOptions) -> None:
    """Rename STORE (an ID, a name, or OWNER~NAME) to NEW_NAME."""

    async def go(t: Target) -> StoreRow:
        return await t.rename_store((await resolve_store(t, store)).id, new_name)

    row = run(target, go)
    if as_json:
        _echo_json(row.to_json())
    else:
        _note(f"Renamed {store} to {row.label}.")


@stores.command("rm", epilog=TARGET_HELP)
@click.argument("store")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@target_options
def stores_rm(store: str, yes: bool, target: TargetOptions) -> None:
    """Delete STORE with all its records (asks first when run in a terminal)."""

    async def go(t: Target) -> StoreRow:
        row = await resolve_store(t, store)
        if not yes and sys.stdin.isatty():
            count = f"{row.record_count} records" if row.record_count is not None else "its records"
            click.confirm(f"Delete store {row.label} and {count}?", abort=True, err=True)
        await t.delete_store(row.id)
        return row

    row = run(target, go)
    _note(f"Deleted store {row.label}.")


@stores.command("info", epilog=TARGET_HELP)
@click.argument("store")
@json_option
@target_options
def stores_info(store: str, as_json: bool, target: TargetOptions) -> None:
    """Show STORE's ID, name, owner, size and timestamps."""
    row = run(target, lambda t: resolve_store(t, store))
    if as_json:
        _echo_json(row.to_json())
        return
    table = Table("Field", "Value", show_header=False)
    fields = [
        ("ID", row.id),
        ("Name", row.name or "(unnamed)"),
        ("Owner", row.username or row.user_id or "-"),
        ("Records", str(row.record_count if row.record_count is not None else "-")),
        ("Size", human_size(row.storage_bytes)),
        ("General access", row.general_access or "-"),
        ("Created", _when(row.created_at)),
        ("Modified", _when(row.modified_at)),
        ("Accessed", _when(row.accessed_at)),
        ("Expires", _when(row.expires_at) if row.expires_at else "never"),
    ]
    for name, value in fields:
        table.add_row(name, value)
    Console().print(table)


# records


@click.command("keys", epilog=TARGET_HELP)
@click.argument("store")
@click.option("--prefix", default=None, metavar="P", help="Only keys starting with P.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="At most N keys.")
@json_option
@target_options
def keys_command(store: str, prefix: str | None, limit: int | None, as_json: bool, target: TargetOptions) -> None:
    """List the keys of STORE in order, with their sizes."""

    async def go(t: Target) -> list[KeyRow]:
        row = await resolve_store(t, store)
        found: list[KeyRow] = []
        async for item in t.iterate_keys(row.id, prefix=prefix):
            found.append(item)
            if limit is not None and len(found) >= limit:
                break
        return found

    rows = run(target, go)
    if as_json:
        _echo_json([{"key": r.key, "size": r.size} for r in rows])
        return
    table = Table("Key", "Size")
    for r in rows:
        table.add_row(r.key, human_size(r.size))
    Console().print(table)


def _is_textual(content_type: str) -> bool:
    return is_text_type(content_type) or is_json_type(content_type)


def _part_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.{os.getpid()}.part")


@click.command("get", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("key")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Write the record to this file instead of stdout.",
)
@click.option("--metadata", is_flag=True, help="Show the content type and size instead of the bytes.")
@json_option
@target_options
def get_command(
    store: str, key: str, output: Path | None, metadata: bool, as_json: bool, target: TargetOptions
) -> None:
    """Read one record: its bytes to stdout or to -o FILE, streamed."""
    to_stdout = output is None or str(output) == "-"
    if as_json and to_stdout and not metadata:
        raise click.UsageError("--json goes with --metadata or -o FILE: otherwise stdout carries the record.")

    async def go(t: Target) -> tuple[RecordInfo, int | None]:
        validate_key(key)
        row = await resolve_store(t, store)
        if metadata:
            info = await t.record_info(row.id, key)
            if info is None:
                raise _missing_record(key, row)
            return info, None
        async with t.open_record(row.id, key) as download:
            if download is None:
                raise _missing_record(key, row)
            info = download.info
            if to_stdout:
                if sys.stdout.isatty() and not _is_textual(info.content_type):
                    raise click.UsageError(
                        f"{key} is {info.content_type}, not text: write it to a file with -o FILE, or redirect stdout."
                    )
                out = sys.stdout.buffer
                try:
                    async for chunk in download.chunks():
                        out.write(chunk)
                    out.flush()
                except BrokenPipeError:  # `kvbox get ... | head`: the reader has what it wanted
                    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                return info, None
            assert output is not None
            part = _part_path(output)
            enabled = show_progress(as_json=as_json, size=info.size)
            try:
                with Transfer(f"Downloading {key}", total=info.size, enabled=enabled) as bar, open(part, "xb") as f:
                    size = 0
                    async for chunk in counted(download, bar.advance):
                        f.write(chunk)
                        size += len(chunk)
                os.replace(part, output)
            except BaseException:
                with contextlib.suppress(OSError):
                    part.unlink()
                raise
            return info, size

    info, written = run(target, go)
    if metadata:
        if as_json:
            _echo_json(info.to_json())
        else:
            for name, value in (
                ("Key", info.key),
                ("Content-Type", info.content_type),
                ("Size", str(info.size) if info.size is not None else "-"),
                ("Encoding", info.encoding),
            ):
                click.echo(f"{name}: {value}")
    elif written is not None:
        if as_json:
            _echo_json({**info.to_json(), "size": written, "file": str(output)})
        else:
            _note(f"Wrote {key} ({info.content_type}, {human_size(written)}) to {output}.")


def guess_content_type(file: Path) -> str:
    """The content type a file's extension stands for (the local layout's table first)."""
    from kvbox.sdk.local.layout import type_for_extension

    ext = file.suffix.lstrip(".")
    return (type_for_extension(ext) if ext else None) or BINARY_TYPE


@contextlib.contextmanager
def _open_source(file: Path) -> Iterator[BinaryIO]:
    if str(file) == "-":
        yield sys.stdin.buffer
        return
    with open(file, "rb") as f:
        yield f


@click.command("put", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("key")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path))
@click.option(
    "--content-type",
    "-t",
    metavar="TYPE",
    help="Store with this content type (default: from FILE's extension, application/octet-stream for stdin).",
)
@json_option
@target_options
def put_command(
    store: str, key: str, file: Path, content_type: str | None, as_json: bool, target: TargetOptions
) -> None:
    """Write FILE (or - for stdin) to record KEY of STORE, streamed; the record is replaced whole."""
    ctype = content_type or (BINARY_TYPE if str(file) == "-" else guess_content_type(file))
    size = file.stat().st_size if str(file) != "-" and file.is_file() else None  # pipes and devices: unknown

    async def go(t: Target) -> StoreRow:
        validate_key(key)
        row = await resolve_store(t, store)
        enabled = show_progress(as_json=as_json, size=size)
        with _open_source(file) as raw, Transfer(f"Uploading {key}", total=size, enabled=enabled) as bar:
            await t.put_record(row.id, key, CountingReader(raw, bar.advance), content_type=ctype, size=size)
        return row

    row = run(target, go)
    if as_json:
        _echo_json({"store": row.id, "key": key, "contentType": ctype, "size": size})
    else:
        _note(f"Stored {key} ({ctype}, {human_size(size) if size is not None else 'from stdin'}) in {row.label}.")


@click.command("rm", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("keys", nargs=-1, required=True)
@click.option("--force", "-f", is_flag=True, help="A record that does not exist is not an error.")
@target_options
def rm_command(store: str, keys: tuple[str, ...], force: bool, target: TargetOptions) -> None:
    """Delete records KEYS... of STORE. Without --force every key must exist, or nothing is deleted."""

    async def go(t: Target) -> StoreRow:
        for key in keys:
            validate_key(key)
        row = await resolve_store(t, store)
        if not force:
            for key in keys:
                if await t.record_info(row.id, key) is None:
                    raise _missing_record(key, row)
        for key in keys:
            await t.delete_record(row.id, key)
        return row

    row = run(target, go)
    _note(f"Deleted {_records(len(keys))} from {row.label}.")


# push and pull


def _record_failure(err: BaseException, what: str) -> BaseException:
    """The error of one record, saying which; bugs pass through untouched."""
    text = describe(err)
    return DataError(f"{what}: {text}") if text is not None else err


async def _push_target(t: Target, ref: str) -> StoreRow:
    """The store a folder goes to: an existing store given by ID or OWNER~NAME, else the caller's NAME."""
    if "~" in ref:
        return await resolve_store(t, ref)
    found = await find_store(t, ref) if looks_like_id(ref) else None
    return found or (await t.create_store(ref))[0]


async def _push_one(t: Target, source: FolderStore, bar: Transfer, jobs: int) -> StoreRow:
    row = await _push_target(t, source.store)

    async def send(record: FolderRecord) -> None:
        try:
            with open(record.path, "rb") as raw:
                reader = CountingReader(raw, bar.advance)
                await t.put_record(row.id, record.key, reader, content_type=record.content_type, size=record.size)
        except Exception as err:
            raise _record_failure(err, f"{record.path} (key {record.key})") from err
        bar.record_done()

    await run_jobs(source.records, send, jobs=jobs)
    return await t.get_store(row.id) or row


@click.command("push", epilog=TARGET_HELP)
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--store",
    default=None,
    metavar="STORE",
    help="Store for the folder `default` (or for DIRECTORY when it is one store folder): "
    "a name (created if missing), an ID, or OWNER~NAME.",
)
@click.option(
    "--jobs", "-j", type=click.IntRange(1, 64), default=JOBS, show_default=True, help="Records sent at a time."
)
@json_option
@target_options
def push_command(directory: Path, store: str | None, jobs: int, as_json: bool, target: TargetOptions) -> None:
    """Upload a local storage folder: every record with its exact bytes and content type.

    DIRECTORY is a storage folder (its key_value_stores/* all go, each to the store of the
    folder's name, `default` to --store or `default`) or one store folder. kvbox,
    crawlee-python 1.x and Crawlee JS layouts are all read. Records already in a store
    are replaced when the folder has the same key, and kept otherwise.
    """
    from kvbox.cli.folder import find_sources

    sources = find_sources(directory, store=store)

    async def go(t: Target) -> list[tuple[FolderStore, StoreRow]]:
        done: list[tuple[FolderStore, StoreRow]] = []
        total = sum(s.size for s in sources)
        count = sum(len(s.records) for s in sources)
        enabled = show_progress(as_json=as_json, always=True)
        with Transfer("Pushing", total=total, records=count, enabled=enabled) as bar:
            for source in sources:
                done.append((source, await _push_one(t, source, bar, jobs)))
        return done

    results = run(target, go)
    if as_json:
        _echo_json(
            {
                "stores": [
                    {"folder": str(s.folder), "records": len(s.records), "bytes": s.size, "store": row.to_json()}
                    for s, row in results
                ]
            }
        )
        return
    for source, row in results:
        _note(
            f"Pushed {_records(len(source.records))} ({human_size(source.size)}) from {source.folder} "
            f"to store {row.label}."
        )


@click.command("pull", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--jobs", "-j", type=click.IntRange(1, 64), default=JOBS, show_default=True, help="Records fetched at a time."
)
@json_option
@target_options
def pull_command(store: str, directory: Path, jobs: int, as_json: bool, target: TargetOptions) -> None:
    """Download every record of STORE into a local store folder, in the local layout.

    DIRECTORY is the store folder to write (created if missing), or a storage folder (with
    key_value_stores/), which gets key_value_stores/<store name>. Bytes and content types
    are kept exactly; files for other keys are left alone.
    """

    from kvbox.cli.folder import FolderWriter, pull_destination

    async def go(t: Target) -> tuple[StoreRow, Path, int, int]:
        row = await resolve_store(t, store)
        keys = [item async for item in t.iterate_keys(row.id)]
        folder = pull_destination(directory, row.name or row.id)
        writer = FolderWriter(folder, store_id=row.id, name=row.name)
        written = [0, 0]
        enabled = show_progress(as_json=as_json, always=True)
        with Transfer("Pulling", total=sum(k.size for k in keys), records=len(keys), enabled=enabled) as bar:

            async def fetch(item: KeyRow) -> None:
                try:
                    async with t.open_record(row.id, item.key) as download:
                        if download is None:
                            return  # deleted since the listing
                        chunks = counted(download, bar.advance)
                        size = await writer.write(item.key, download.info.content_type, chunks)
                except Exception as err:
                    raise _record_failure(err, f"key {item.key}") from err
                # Added only after the await: `total += await ...` would read the total before
                # the other jobs' additions and lose them.
                written[0] += 1
                written[1] += size
                bar.record_done()

            await run_jobs(keys, fetch, jobs=jobs)
        return row, folder, written[0], written[1]

    row, folder, records, size = run(target, go)
    if as_json:
        _echo_json({"store": row.to_json(), "folder": str(folder), "records": records, "bytes": size})
    else:
        _note(f"Pulled {_records(records)} ({human_size(size)}) from store {row.label} into {folder}.")


COMMANDS = (stores, keys_command, get_command, put_command, rm_command, push_command, pull_command)
