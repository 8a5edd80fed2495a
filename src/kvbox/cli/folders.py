"""`kvbox push` and `kvbox pull`: local storage folders to stores and back.

Folders are read and written by the SDK's local mode (`kvbox.sdk.local`), so kvbox folders
(`{KEY}.{EXT}`), crawlee-python 1.x folders (percent-encoded names with sidecars) and
Crawlee JS folders all push, and a pull writes the kvbox layout: each record streams into a
temporary file that then replaces its target in one step, with a sidecar only when the
extension cannot carry the exact content type. A pushed folder is only read, never written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kvbox.cli.output import echo_json, human_size, json_option, note, records_count
from kvbox.cli.session import TARGET_HELP, TargetOptions, record_failure, run, target_options
from kvbox.cli.target import KeyRow, RecordChangedError, StoreRow, Target, find_store, resolve_store
from kvbox.cli.transfer import CountingReader, Transfer, counted, run_jobs, show_progress
from kvbox.core.ids import looks_like_id
from kvbox.core.keys import is_valid_key
from kvbox.core.names import is_valid_store_name

if TYPE_CHECKING:  # the SDK loads only when a folder is read or written
    from kvbox.sdk.local import RecordFile

JOBS = 4
RESTARTS = 3  # a record written again while its download had to resume is fetched again
INPUT_KEYS = frozenset({"INPUT", os.environ.get("ACTOR_INPUT_KEY") or "INPUT"})


@dataclass(frozen=True, slots=True)
class FolderStore:
    """One store folder to push, and the store it goes to (a name, an ID or `owner~name`)."""

    folder: Path
    store: str
    records: list[RecordFile]

    @property
    def size(self) -> int:
        return sum(r.size for r in self.records)


def read_folder(folder: Path) -> list[RecordFile]:
    """Every record of a store folder with its exact content type, in key order; nothing is written."""
    from kvbox.sdk.local import open_store_folder

    return list(open_store_folder(str(folder), read_only=True, input_keys=INPUT_KEYS).record_files())


def find_sources(directory: Path, *, store: str | None) -> list[FolderStore]:
    """The store folders under `directory` and where each goes; usage errors say what is wrong.

    `directory` is a storage folder (with `key_value_stores/`), `key_value_stores/` itself,
    or one store folder. The folder `default` goes to `store` (or `default`); another folder
    goes to the store of its name; a single folder given directly goes to `store` if given.
    """
    from kvbox.sdk.local import DEFAULT_STORE_DIR, METADATA_FILE, STORES_SUBDIR

    root = directory / STORES_SUBDIR if (directory / STORES_SUBDIR).is_dir() else None
    if root is None and directory.name == STORES_SUBDIR:
        root = directory
    if root is None:
        records = read_folder(directory)
        if not records and not (directory / METADATA_FILE).exists():
            raise click.UsageError(
                f"{directory} holds no records: give a storage folder (with key_value_stores/) "
                "or one store folder (key_value_stores/NAME)."
            )
        sources = [FolderStore(directory, store or directory.resolve().name, records)]
    else:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not folders:
            raise click.UsageError(f"{root} holds no store folders.")
        if store is not None and not any(f.name == DEFAULT_STORE_DIR for f in folders):
            raise click.UsageError(f"--store names the store for {root}/default, and there is no such folder.")
        sources = [
            FolderStore(f, store if store and f.name == DEFAULT_STORE_DIR else f.name, read_folder(f)) for f in folders
        ]
    _check(sources)
    return sources


def _check(sources: list[FolderStore]) -> None:
    """Refuse before sending anything: names and keys the server would reject."""
    problems: list[str] = []
    for source in sources:
        ref = source.store
        if "~" not in ref and not looks_like_id(ref) and not is_valid_store_name(ref):
            problems.append(
                f"{source.folder}: {ref!r} is not a valid store name (letters, digits and inner hyphens, "
                "at most 63); push this folder alone with --store NAME"
            )
        bad = [r.key for r in source.records if not is_valid_key(r.key)]
        if bad:
            shown = ", ".join(repr(k) for k in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            problems.append(f"{source.folder}: keys a server cannot store (1-256 of a-zA-Z0-9!-_.'()): {shown}")
    if problems:
        raise click.UsageError("Nothing was pushed.\n  " + "\n  ".join(problems))


def pull_destination(directory: Path, store_name: str) -> Path:
    """The store folder to write: inside a storage folder the store's own folder, else `directory` itself."""
    from kvbox.sdk.local import STORES_SUBDIR

    if (directory / STORES_SUBDIR).is_dir():
        return directory / STORES_SUBDIR / store_name
    if directory.name == STORES_SUBDIR:
        return directory / store_name
    return directory


# push


async def _push_target(t: Target, ref: str) -> StoreRow:
    """The store a folder goes to: an existing store given by ID or OWNER~NAME, else the caller's NAME."""
    if "~" in ref:
        return await resolve_store(t, ref)
    found = await find_store(t, ref) if looks_like_id(ref) else None
    return found or (await t.create_store(ref))[0]


async def _push_one(t: Target, source: FolderStore, bar: Transfer, jobs: int) -> StoreRow:
    row = await _push_target(t, source.store)

    async def send(record: RecordFile) -> None:
        try:
            with open(record.path, "rb") as raw:
                reader = CountingReader(raw, bar.advance)
                await t.put_record(row.id, record.key, reader, content_type=record.content_type, size=record.size)
        except Exception as err:
            raise record_failure(err, f"{record.path} (key {record.key})") from err
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
        echo_json(
            {
                "stores": [
                    {"folder": str(s.folder), "records": len(s.records), "bytes": s.size, "store": row.to_json()}
                    for s, row in results
                ]
            }
        )
        return
    for source, row in results:
        note(
            f"Pushed {records_count(len(source.records))} ({human_size(source.size)}) from {source.folder} "
            f"to store {row.label}."
        )


# pull


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
    are kept exactly; files for other keys are left alone. A record whose download loses its
    connection goes on where it broke, from the same version of the record.
    """
    from kvbox.sdk.local import open_store_folder

    async def go(t: Target) -> tuple[StoreRow, Path, int, int]:
        row = await resolve_store(t, store)
        keys = [item async for item in t.iterate_keys(row.id)]
        folder = pull_destination(directory, row.name or row.id)
        local = open_store_folder(str(folder), id=row.id, name=row.name, input_keys=INPUT_KEYS)
        written = [0, 0]
        enabled = show_progress(as_json=as_json, always=True)
        with Transfer("Pulling", total=sum(k.size for k in keys), records=len(keys), enabled=enabled) as bar:

            async def fetch(item: KeyRow) -> None:
                for restart in range(RESTARTS + 1):
                    try:
                        async with t.open_record(row.id, item.key) as download:
                            if download is None:
                                return  # deleted since the listing
                            with local.open_writer(item.key, download.info.content_type) as out:
                                async for chunk in counted(download, bar.advance):
                                    out.write(chunk)
                        break
                    except RecordChangedError:
                        if restart == RESTARTS:
                            raise
                    except Exception as err:
                        raise record_failure(err, f"key {item.key}") from err
                written[0] += 1
                written[1] += out.size
                bar.record_done()

            await run_jobs(keys, fetch, jobs=jobs)
        return row, folder, written[0], written[1]

    row, folder, records, size = run(target, go)
    if as_json:
        echo_json({"store": row.to_json(), "folder": str(folder), "records": records, "bytes": size})
    else:
        note(f"Pulled {records_count(records)} ({human_size(size)}) from store {row.label} into {folder}.")
