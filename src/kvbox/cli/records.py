"""`kvbox keys`, `get`, `put` and `rm`: the records of one store, streamed in and out.

`get` reads a whole record or a range of it; a download that loses its connection goes on
where it broke (see `Download`). `put` can be conditional: `--if-match ETAG`, `--if-absent`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import click
from rich.console import Console
from rich.table import Table

from kvbox.cli.output import echo_json, human_size, json_option, note, records_count, when
from kvbox.cli.session import TARGET_HELP, TargetOptions, run, target_options
from kvbox.cli.target import (
    DataError,
    Download,
    KeyRow,
    RecordChangedError,
    RecordInfo,
    StoreRow,
    Target,
    resolve_store,
)
from kvbox.cli.transfer import CountingReader, Transfer, counted, show_progress
from kvbox.core.content import BINARY_TYPE, is_json_type, is_text_type
from kvbox.core.errors import RecordNotFoundError
from kvbox.core.keys import validate_key

# A record written again while its download had to resume is downloaded again from the start,
# at most this many times.
RESTARTS = 3
_RANGE = re.compile(r"(?:bytes=)?(\d*)-(\d*)")


def _missing_record(key: str, store: StoreRow) -> DataError:
    return DataError(f'Record "{key}" was not found in store {store.label} ({RecordNotFoundError.type}).')


def parse_range_option(value: str | None) -> tuple[int, int | None]:
    """`--range A-B` (bytes A to B, both included), `A-` (from A on) or `-N` (the last N bytes),
    as HTTP writes them, into an offset and a length."""
    if value is None:
        return 0, None
    found = _RANGE.fullmatch(value.strip())
    if found is None or not any(found.groups()):
        raise click.BadParameter("use A-B, A- or -N (bytes, counted from 0)", param_hint="--range")
    first, last = found.groups()
    if not first:
        if int(last) == 0:
            raise click.BadParameter("-N asks for the last N bytes: N must be at least 1", param_hint="--range")
        return -int(last), None
    if last and int(last) < int(first):
        raise click.BadParameter(f"{value}: the range ends before it starts", param_hint="--range")
    return int(first), int(last) - int(first) + 1 if last else None


@click.command("keys", epilog=TARGET_HELP)
@click.argument("store")
@click.option("--prefix", default=None, metavar="P", help="Only keys starting with P.")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N", help="At most N keys.")
@json_option
@target_options
def keys_command(store: str, prefix: str | None, limit: int | None, as_json: bool, target: TargetOptions) -> None:
    """List the keys of STORE in order, with their sizes, content types, last writes and expiry."""

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
        echo_json([r.to_json() for r in rows])
        return
    table = Table("Key", "Size", "Content type", "Modified", "Expires")
    for r in rows:
        table.add_row(r.key, human_size(r.size), r.content_type or "-", when(r.modified_at),
                      when(r.expires_at) if r.expires_at else "never")  # fmt: skip
    Console().print(table)


def _is_textual(content_type: str) -> bool:
    return is_text_type(content_type) or is_json_type(content_type)


def _part_path(output: Path) -> Path:
    return output.with_name(f".{output.name}.{os.getpid()}.part")


async def _to_stdout(download: Download) -> None:
    info = download.info
    if sys.stdout.isatty() and not _is_textual(info.content_type):
        raise click.UsageError(
            f"{info.key} is {info.content_type}, not text: write it to a file with -o FILE, or redirect stdout."
        )
    out = sys.stdout.buffer
    try:
        async for chunk in download.chunks():
            out.write(chunk)
        out.flush()
    except BrokenPipeError:  # `kvbox get ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


async def _to_file(download: Download, output: Path, *, as_json: bool) -> int:
    """Stream into a `.part` file beside `output`, renamed over it once whole; returns the size."""
    info = download.info
    part = _part_path(output)
    enabled = show_progress(as_json=as_json, size=info.size)
    try:
        with Transfer(f"Downloading {info.key}", total=info.size, enabled=enabled) as bar, open(part, "xb") as f:
            size = 0
            async for chunk in counted(download, bar.advance):
                f.write(chunk)
                size += len(chunk)
        os.replace(part, output)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    return size


@click.command("get", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("key")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
    help="Write the record to this file instead of stdout.",
)
@click.option("--metadata", is_flag=True, help="Show the content type, size and ETag instead of the bytes.")
@click.option(
    "--range",
    "byte_range",
    metavar="A-B|A-|-N",
    help="Only these bytes of the record: A to B (both included), from A on, or the last N.",
)
@json_option
@target_options
def get_command(
    store: str,
    key: str,
    output: Path | None,
    metadata: bool,
    byte_range: str | None,
    as_json: bool,
    target: TargetOptions,
) -> None:
    """Read one record: its bytes (or --range of them) to stdout or to -o FILE, streamed.

    A download that loses its connection goes on where it broke, from the same version of
    the record; one that changed meanwhile is downloaded again from the start (to a file).
    """
    to_stdout = output is None or str(output) == "-"
    if as_json and to_stdout and not metadata:
        raise click.UsageError("--json goes with --metadata or -o FILE: otherwise stdout carries the record.")
    if metadata and byte_range is not None:
        raise click.UsageError("--range reads bytes; --metadata shows none.")
    offset, length = parse_range_option(byte_range)

    async def go(t: Target) -> tuple[RecordInfo, int | None]:
        validate_key(key)
        row = await resolve_store(t, store)
        if metadata:
            info = await t.record_info(row.id, key)
            if info is None:
                raise _missing_record(key, row)
            return info, None
        for restart in range(RESTARTS + 1):
            try:
                async with t.open_record(row.id, key, offset=offset, length=length) as download:
                    if download is None:
                        raise _missing_record(key, row)
                    if output is None or to_stdout:
                        await _to_stdout(download)
                        return download.info, None
                    return download.info, await _to_file(download, output, as_json=as_json)
            except RecordChangedError:
                if to_stdout or restart == RESTARTS:
                    raise  # what went to stdout cannot be taken back
        raise AssertionError("unreachable")

    info, written = run(target, go)
    if metadata:
        if as_json:
            echo_json(info.to_json())
        else:
            for name, value in (
                ("Key", info.key),
                ("Content-Type", info.content_type),
                ("Size", str(info.size) if info.size is not None else "-"),
                ("Encoding", info.encoding),
                ("ETag", info.etag or "-"),
            ):
                click.echo(f"{name}: {value}")
    elif written is not None:
        if as_json:
            echo_json({**info.to_json(), "size": written, "file": str(output)})
        else:
            note(f"Wrote {key} ({info.content_type}, {human_size(written)}) to {output}.")


def guess_content_type(file: Path) -> str:
    """The content type a file's extension stands for (the local layout's table first)."""
    from kvbox.sdk.local import type_for_extension  # the SDK loads only for this

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
@click.option(
    "--if-match",
    metavar="ETAG",
    help="Write only over this version of the record (its ETag, as `get --metadata` shows it; * for any).",
)
@click.option("--if-absent", is_flag=True, help="Write only if the record does not exist yet.")
@json_option
@target_options
def put_command(
    store: str,
    key: str,
    file: Path,
    content_type: str | None,
    if_match: str | None,
    if_absent: bool,
    as_json: bool,
    target: TargetOptions,
) -> None:
    """Write FILE (or - for stdin) to record KEY of STORE, streamed; the record is replaced whole.

    With --if-match or --if-absent the write happens only if the record is as asked, checked
    in one step with the write: otherwise nothing changes and the command fails
    (a 412 error). The new ETag is shown.
    """
    if if_match is not None and if_absent:
        raise click.UsageError("--if-match and --if-absent exclude each other.")
    ctype = content_type or (BINARY_TYPE if str(file) == "-" else guess_content_type(file))
    size = file.stat().st_size if str(file) != "-" and file.is_file() else None  # pipes and devices: unknown

    async def go(t: Target) -> tuple[StoreRow, str | None]:
        validate_key(key)
        row = await resolve_store(t, store)
        enabled = show_progress(as_json=as_json, size=size)
        with _open_source(file) as raw, Transfer(f"Uploading {key}", total=size, enabled=enabled) as bar:
            source = CountingReader(raw, bar.advance)
            etag = await t.put_record(
                row.id, key, source, content_type=ctype, size=size, if_match=if_match, if_absent=if_absent
            )
        return row, etag

    row, etag = run(target, go)
    if as_json:
        echo_json({"store": row.id, "key": key, "contentType": ctype, "size": size, "etag": etag})
    else:
        stored = human_size(size) if size is not None else "from stdin"
        note(f"Stored {key} ({ctype}, {stored}) in {row.label}; ETag {etag or '-'}.")


@click.command("rm", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("keys", nargs=-1)
@click.option("--force", "-f", is_flag=True, help="A record that does not exist is not an error.")
@click.option("--prefix", default=None, metavar="P", help='Delete every record whose key starts with P ("" for all).')
@click.option("--yes", "-y", is_flag=True, help="With --prefix: do not ask for confirmation.")
@json_option
@target_options
def rm_command(
    store: str, keys: tuple[str, ...], force: bool, prefix: str | None, yes: bool, as_json: bool, target: TargetOptions
) -> None:
    """Delete records KEYS... of STORE, or with --prefix every record under a prefix in one
    request. Without --force every key must exist, or nothing is deleted."""
    if prefix is not None:
        if keys:
            raise click.UsageError("Give KEYS or --prefix, not both.")
        _rm_prefix(store, prefix, yes=yes, as_json=as_json, target=target)
        return
    if not keys:
        raise click.UsageError("Give the KEYS to delete, or --prefix.")

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
    note(f"Deleted {records_count(len(keys))} from {row.label}.")


def _rm_prefix(store: str, prefix: str, *, yes: bool, as_json: bool, target: TargetOptions) -> None:
    async def go(t: Target) -> tuple[StoreRow, int]:
        row = await resolve_store(t, store)
        if not yes and sys.stdin.isatty():
            what = f"every record whose key starts with {prefix!r}" if prefix else "every record"
            click.confirm(f"Delete {what} in store {row.label}?", abort=True, err=True)
        return row, await t.delete_prefix(row.id, prefix)

    row, count = run(target, go)
    if as_json:
        echo_json({"store": row.id, "prefix": prefix, "deletedCount": count})
    else:
        under = f" with prefix {prefix!r}" if prefix else ""
        note(f"Deleted {records_count(count)}{under} from {row.label}.")
