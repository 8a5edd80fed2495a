"""Local storage folders for `kvbox push` and `kvbox pull`.

Reading goes through the SDK's local layout code, so kvbox folders (`{KEY}.{EXT}`),
crawlee-python 1.x folders (percent-encoded names with sidecars) and Crawlee JS folders all
work. Writing produces the kvbox layout: each record streams into a temporary file that
then replaces its target in one step, with a sidecar only when the extension cannot carry
the exact content type.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import click

from kvbox.core.content import BINARY_TYPE, JSON_TYPE
from kvbox.core.errors import InvalidRecordKeyError
from kvbox.core.ids import looks_like_id
from kvbox.core.keys import is_valid_key
from kvbox.core.names import is_valid_store_name
from kvbox.sdk.local import LocalStore, files, layout
from kvbox.sdk.models import StoreMetadata

INPUT_KEYS = frozenset({"INPUT", os.environ.get("ACTOR_INPUT_KEY") or "INPUT"})


class _ReadOnlyStore(LocalStore):
    """A folder being pushed: listed and located, never written (it may be read-only)."""

    def _touch(self, *, modified: bool) -> None:
        # LocalStore persists the folder's timestamps on access, as crawlee does; a push only reads.
        return None


@dataclass(frozen=True, slots=True)
class FolderRecord:
    key: str
    path: str
    content_type: str
    size: int


@dataclass(frozen=True, slots=True)
class FolderStore:
    """One store folder to push, and the store it goes to (a name, an ID or `owner~name`)."""

    folder: Path
    store: str
    records: list[FolderRecord]

    @property
    def size(self) -> int:
        return sum(r.size for r in self.records)


def _sniff(path: str) -> str:
    """A bare input file (no extension, no sidecar) is JSON when it parses, bytes otherwise."""
    data = files.read_file(path) or b""
    try:
        json.loads(data)
    except ValueError:
        return BINARY_TYPE
    return JSON_TYPE


def read_folder(folder: Path) -> list[FolderRecord]:
    """Every record of a store folder with its exact content type, in key order."""
    meta = StoreMetadata(id="", name=None, created_at=None, accessed_at=None, modified_at=None)
    store = _ReadOnlyStore(str(folder), meta, durable=False, input_keys=INPUT_KEYS)
    records: list[FolderRecord] = []
    listing = store.keys()  # key order, as the server lists them
    for item in listing:
        found = store.locate(item.key)
        if found is None:
            continue  # removed since the listing
        path = str(folder / found.filename)
        ctype = found.content_type or _sniff(path)
        records.append(FolderRecord(item.key, path, ctype, found.size))
    return records


def _store_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_sources(directory: Path, *, store: str | None) -> list[FolderStore]:
    """The store folders under `directory` and where each goes; usage errors say what is wrong.

    `directory` is a storage folder (with `key_value_stores/`), `key_value_stores/` itself,
    or one store folder. The folder `default` goes to `store` (or `default`); another folder
    goes to the store of its name; a single folder given directly goes to `store` if given.
    """
    root = directory / layout.STORES_SUBDIR if (directory / layout.STORES_SUBDIR).is_dir() else None
    if root is None and directory.name == layout.STORES_SUBDIR:
        root = directory
    if root is None:
        name = store or directory.resolve().name
        records = read_folder(directory)
        if not records and not (directory / layout.METADATA_FILE).exists():
            raise click.UsageError(
                f"{directory} holds no records: give a storage folder (with key_value_stores/) "
                "or one store folder (key_value_stores/NAME)."
            )
        sources = [FolderStore(directory, name, records)]
    else:
        folders = _store_folders(root)
        if not folders:
            raise click.UsageError(f"{root} holds no store folders.")
        if store is not None and not any(f.name == layout.DEFAULT_STORE_DIR for f in folders):
            raise click.UsageError(f"--store names the store for {root}/default, and there is no such folder.")
        sources = [
            FolderStore(f, store if store and f.name == layout.DEFAULT_STORE_DIR else f.name, read_folder(f))
            for f in folders
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
    if (directory / layout.STORES_SUBDIR).is_dir():
        return directory / layout.STORES_SUBDIR / store_name
    if directory.name == layout.STORES_SUBDIR:
        return directory / store_name
    return directory


class FolderWriter:
    """Writes records into one store folder in the kvbox layout."""

    def __init__(self, folder: Path, *, store_id: str, name: str | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        now = datetime.now(UTC)
        if not (folder / layout.METADATA_FILE).exists():
            folder_name = None if folder.name == layout.DEFAULT_STORE_DIR else (name or folder.name)
            payload = files.store_metadata_bytes(store_id, folder_name, now, now, now)
            files.create_exclusive(str(folder), layout.METADATA_FILE, payload)
        meta = StoreMetadata(id=store_id, name=name, created_at=now, accessed_at=now, modified_at=now)
        self._store = LocalStore(str(folder), meta, durable=False, input_keys=INPUT_KEYS)

    async def write(self, key: str, content_type: str, chunks: AsyncIterator[bytes]) -> int:
        """Stream one record into place; returns its size. Any older file of the key goes."""
        filename, needs_sidecar = layout.value_filename(key, content_type)
        if layout.is_reserved(filename):
            raise InvalidRecordKeyError(f"Record key {key!r} is reserved by the local folder layout")
        directory = str(self.folder)
        old = self._store.locate(key)
        tmp = files.temp_name(directory, filename)
        size = 0
        try:
            with open(tmp, "xb") as out:
                async for chunk in chunks:
                    out.write(chunk)
                    size += len(chunk)
            os.replace(tmp, f"{directory}/{filename}")
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        sidecar = layout.sidecar_name(filename)
        if needs_sidecar:
            files.write_atomic(directory, sidecar, files.sidecar_bytes(key, content_type, size))
        else:
            files.remove(f"{directory}/{sidecar}")
        if old is not None and old.filename != filename:
            files.remove(f"{directory}/{old.filename}")
            files.remove(f"{directory}/{layout.sidecar_name(old.filename)}")
        return size
