"""One local store: a folder of record files (see `layout.py`), read and written in place.

Which file holds a key is remembered after the first directory listing, and checked on
every read: a file another process removed sends the lookup back to the disk, and a key
another process created is found by probing its possible file names. Every write is one
atomic file replacement, so concurrent writers never leave a torn or half-written file.

Several processes may share a folder. Values written with the same content type behave as
one store (the last write wins). `update` reads, changes and writes a record under the
folder's lock (lock.py), which every write takes while it puts its file in place, so an
update never loses another kvbox writer's change. When a process changes a key's content type, and so its
extension, it removes the old file only if it knew of it; a key whose type another process
changed since this one last listed the folder can be left with two files. A listing then
takes the newer one, but a process that had already read the older one keeps reading it
until it lists the folder or writes the key.

A record written with an expiry keeps it in its sidecar (`expires_at`); from that instant on
it is absent for reads and listings. Its files stay until the record is written again or
deleted (reads never write).

A store opened read-only lists and reads, and never writes: not even its timestamps.
"""

from __future__ import annotations

import bisect
import json
import os
import shutil
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote

from kvbox.core.clock import Clock, SystemClock
from kvbox.core.content import BINARY_TYPE, JSON_TYPE
from kvbox.core.errors import InvalidRecordKeyError, RecordNotFoundError
from kvbox.sdk.local import files, layout
from kvbox.sdk.local.layout import SIDECAR_SUFFIX
from kvbox.sdk.local.lock import FolderLock
from kvbox.sdk.models import RecordMetadata, StoreMetadata

# Store timestamps are rewritten at most this often (crawlee rewrites them on every call).
METADATA_PERSIST_INTERVAL = 1.0
CHUNK_SIZE = 256 * 1024

Value = tuple[bytes, str | None]
"""A record's bytes and content type (None: a bare input file, JSON if it parses)."""
Change = Callable[[Value | None], tuple[bytes, str] | None]
"""What `update` does to a record: from its current value (None: missing) to the new bytes
and content type (None: delete it)."""


@dataclass(frozen=True, slots=True)
class Located:
    """Where a record is. `content_type` None means "sniff": a bare input file (JSON or bytes).
    `expires_at` is the record's own expiry (ms), from its sidecar."""

    filename: str
    content_type: str | None
    size: int
    mtime_ns: int
    expires_at: int | None = None


@dataclass(frozen=True, slots=True)
class RecordFile:
    """A record as a file on disk: its key, exact content type, size in bytes and path."""

    key: str
    content_type: str
    size: int
    path: str


class LocalStore:
    """The synchronous local backend behind `KeyValueStore` and `KeyValueStoreSync`.

    `read_only`: list and read only; writes, deletes and `flush` raise `PermissionError`.
    """

    def __init__(
        self,
        directory: str,
        meta: StoreMetadata,
        *,
        durable: bool,
        input_keys: frozenset[str],
        read_only: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self.directory = directory
        self.clock: Clock = clock or SystemClock()
        self.meta = meta
        self.read_only = read_only
        self._durable = durable
        self._input_keys = input_keys
        self._files: dict[str, str] = {}
        self._indexed = False
        self._created = meta.created_at or datetime.now(UTC)
        self._accessed = time.time()
        self._modified = meta.modified_at.timestamp() if meta.modified_at else self._accessed
        self._persisted = time.monotonic()
        self._lock = FolderLock(directory)

    # records

    def locate(self, key: str, *, moving: bool = False) -> Located | None:
        """The file holding `key`, or None. `moving`: the record was just seen to move."""
        if not self._indexed:
            self._index()
        name = self._files.get(key)
        if name is not None and not moving:
            found = self._inspect(key, name)
            if found is not None:
                return self._unexpired(found)
            moving = True  # the file we knew is gone: another process is moving the record
        found = self._settled(key) if moving else self._probe(key)
        if found is None:
            self._files.pop(key, None)
        else:
            self._files[key] = found.filename  # an expired record's file is still the key's
        return self._unexpired(found)

    def _unexpired(self, found: Located | None) -> Located | None:
        if found is None or found.expires_at is None or found.expires_at > self.clock.now_ms():
            return found
        return None

    def _settled(self, key: str) -> Located | None:
        """Find a record that another process is moving to a file of another type.

        Probing names one by one can fall between the writer's two steps (write the new file,
        remove the old one). One directory listing sees either file or both, so the lookup
        works from listings, repeated while the files it names keep vanishing.
        """
        found: Located | None = None
        for _ in range(10):
            try:
                present = set(os.listdir(self.directory))
            except FileNotFoundError:
                return None
            names = [n for n in layout.candidate_filenames(key) if n in present]
            if not names:
                return None
            inspected = [f for n in names if (f := self._inspect(key, n)) is not None]
            if inspected:
                found = max(inspected, key=lambda f: f.mtime_ns)
                break
        return found

    def read_located(self, found: Located) -> bytes | None:
        """A located record's bytes; None if it vanished since."""
        self._touch(modified=False)
        return files.read_file(f"{self.directory}/{found.filename}")

    def read(self, key: str, *, moving: bool = False) -> tuple[bytes, str | None] | None:
        """The record's bytes and content type (None: sniff JSON), or None when missing."""
        for _ in range(3):  # a writer in another process may move the record under us
            found = self.locate(key, moving=moving)
            if found is None:
                return None
            data = self.read_located(found)
            if data is not None:
                return data, found.content_type
            self._files.pop(key, None)
            moving = True
        return None

    def exists(self, key: str) -> bool:
        return self.locate(key) is not None

    def stream(self, key: str, offset: int = 0, length: int | None = None) -> Generator[bytes, None, None]:
        """The record's bytes from `offset` on (at most `length` of them; a negative `offset`:
        the last `-offset` bytes), read in chunks from one open file; nothing before `offset`
        is read. `RecordNotFoundError` when missing."""
        moving = False
        for _ in range(3):  # a writer in another process may move the record under us
            found = self.locate(key, moving=moving)
            if found is None:
                break
            try:
                file = open(f"{self.directory}/{found.filename}", "rb")  # noqa: SIM115 - closed by _file_chunks
            except FileNotFoundError:
                self._files.pop(key, None)
                moving = True
                continue
            self._touch(modified=False)
            yield from _file_chunks(file, offset, length, CHUNK_SIZE)
            return
        raise RecordNotFoundError(f"Record {key!r} was not found in {self.directory}")

    def update(self, key: str, change: Change, retries: int = 0) -> None:
        """Replace the record with `change(current value)` (None: delete it), with no other
        kvbox write to the folder in between, from this process or another. (`retries` is
        for the remote twin: under the lock there is no conflict to retry.)"""
        del retries
        self._check_writable()
        with self._lock.held():
            found = self._probe(key)  # from the disk, not from what this process last saw
            data = self.read_located(found) if found is not None else None
            if found is not None and data is not None:
                self._files[key] = found.filename  # so that a write of another type removes it
            live = found is not None and data is not None and self._unexpired(found) is not None
            new = change((data, found.content_type) if live and found is not None and data is not None else None)
            if new is not None:
                self.write(key, *new)
            elif data is not None:
                self.delete(key)

    def write(self, key: str, data: bytes, content_type: str, *, expires_in: int | None = None) -> None:
        """Replace the record with `data` in one step; with `expires_in`, it expires that many
        seconds from now."""
        expires_at = None if expires_in is None else self.clock.now_ms() + expires_in * 1000
        with self.open_writer(key, content_type, expires_at=expires_at) as out:
            out.write(data)

    def write_stream(self, key: str, content_type: str, chunks: Iterable[bytes]) -> int:
        """Replace the record with the concatenated `chunks`, in one step once all are written;
        returns its size. Memory stays bounded by one chunk."""
        with self.open_writer(key, content_type) as out:
            for chunk in chunks:
                out.write(chunk)
        return out.size

    @contextmanager
    def open_writer(self, key: str, content_type: str, *, expires_at: int | None = None) -> Iterator[files.AtomicFile]:
        """Write a record piece by piece: call `write(chunk)` on what this yields. It expires at
        `expires_at` (ms) when given.

        The record is replaced in one step when the block ends, and left as it was when the
        block raises; until then readers see the old value. Like `write`, a file of another
        type that held the key is removed only if no other writer replaced it meanwhile.
        """
        self._check_writable()
        filename, needs_sidecar = layout.value_filename(key, content_type)
        if layout.is_reserved(filename):
            raise InvalidRecordKeyError(f"Record key {key!r} is reserved by the local folder layout")
        if not self._indexed:
            self._index()
        old = self._files.get(key)
        # A file of another type is removed only if it is still the one we knew: a writer in
        # another process may have put a newer value there meanwhile, and that one must survive.
        old_id = files.identity(f"{self.directory}/{old}") if old is not None and old != filename else None
        out = files.AtomicFile(self.directory, filename, durable=self._durable)
        try:
            yield out
        except BaseException:
            out.discard()
            raise
        with self._lock.held():  # the value, its sidecar and the old file change under the lock
            out.commit()
            sidecar = filename + SIDECAR_SUFFIX
            if needs_sidecar or expires_at is not None:
                meta = files.sidecar_bytes(key, content_type, out.size, expires_at)
                files.write_atomic(self.directory, sidecar, meta, durable=self._durable)
            else:
                files.remove(f"{self.directory}/{sidecar}")
            if old_id is not None and old is not None and files.identity(f"{self.directory}/{old}") == old_id:
                self._remove_file(old)
        self._files[key] = filename
        self._touch(modified=True)

    def delete_prefix(self, prefix: str) -> int:
        """Delete every record whose key starts with `prefix` ("" for all); returns how many
        were there (expired ones are removed too, but not counted)."""
        self._check_writable()
        count = 0
        now = self.clock.now_ms()
        for key, (_, _, expires_at) in sorted(self._scan().items()):
            if key.startswith(prefix):
                self.delete(key)
                count += expires_at is None or expires_at > now
        return count

    def delete(self, key: str) -> None:
        """Remove every file holding `key`; a missing key is a no-op."""
        self._check_writable()
        with self._lock.held():
            names = {f.filename for f in self._inspect_all(key)}
            hinted = self._files.pop(key, None)
            if hinted is not None and self._inspect(key, hinted) is not None:
                names.add(hinted)
            for name in names:
                self._remove_file(name)
        if names:
            self._touch(modified=True)

    def keys(self, exclusive_start_key: str | None = None, limit: int | None = None) -> Iterator[RecordMetadata]:
        """Keys in ascending order after `exclusive_start_key`; `limit` None or 0 means all."""
        found = self._scan()
        self._files = {key: entry[0] for key, entry in found.items()}
        self._indexed = True
        self._touch(modified=False)
        ordered = sorted(found)
        start = 0 if exclusive_start_key is None else bisect.bisect_right(ordered, exclusive_start_key)
        count = 0
        try:
            # Names resolved against the folder's descriptor: the kernel walks one component, not the whole path.
            dir_fd = os.open(self.directory, os.O_RDONLY)
        except FileNotFoundError:
            return
        now = self.clock.now_ms()
        try:
            for key in ordered[start:]:
                filename, ctype, expires_at = found[key]
                if expires_at is not None and expires_at <= now:
                    continue
                try:
                    stat = os.stat(filename, dir_fd=dir_fd)
                except FileNotFoundError:
                    continue  # deleted by someone else since the listing
                modified = datetime.fromtimestamp(stat.st_mtime, UTC)
                expires = None if expires_at is None else datetime.fromtimestamp(expires_at / 1000, UTC)
                yield RecordMetadata(key, stat.st_size, ctype or BINARY_TYPE, modified, expires)
                count += 1
                if limit and count >= limit:
                    return
        finally:
            os.close(dir_fd)

    def record_files(self) -> Iterator[RecordFile]:
        """Every record's file in key order, with its exact content type and size.

        A bare input file (no extension, no sidecar) is JSON when it parses, bytes otherwise.
        """
        for item in self.keys():
            found = self.locate(item.key)
            if found is None:
                continue  # removed since the listing
            path = f"{self.directory}/{found.filename}"
            yield RecordFile(item.key, found.content_type or _sniffed_type(path), found.size, path)

    def public_url(self, key: str) -> str:
        """The `file://` URI of the record's file."""
        found = self.locate(key)
        if found is None:
            raise RecordNotFoundError(f"Record {key!r} was not found in {self.directory}")
        return Path(os.path.abspath(f"{self.directory}/{found.filename}")).as_uri()

    # the store

    def metadata(self) -> StoreMetadata:
        return StoreMetadata(
            id=self.meta.id,
            name=self.meta.name,
            created_at=self._created,
            accessed_at=datetime.fromtimestamp(self._accessed, UTC),
            modified_at=datetime.fromtimestamp(self._modified, UTC),
        )

    def flush(self) -> None:
        """Write the store's timestamps now (they are otherwise written at most once a second)."""
        self._check_writable()
        meta = self.metadata()
        data = files.store_metadata_bytes(
            meta.id, meta.name, self._created, meta.accessed_at or self._created, meta.modified_at or self._created
        )
        if os.path.isdir(self.directory):
            files.write_atomic(self.directory, layout.METADATA_FILE, data, durable=self._durable)
        self._persisted = time.monotonic()

    def drop(self) -> None:
        self._check_writable()
        shutil.rmtree(self.directory, ignore_errors=not os.path.isdir(self.directory))
        self._files.clear()

    # internals

    def _check_writable(self) -> None:
        if self.read_only:
            raise PermissionError(f"The store in {self.directory} was opened read-only")

    def _touch(self, *, modified: bool) -> None:
        now = time.time()
        self._accessed = now
        if modified:
            self._modified = now
        if not self.read_only and time.monotonic() - self._persisted >= METADATA_PERSIST_INTERVAL:
            self.flush()

    def _remove_file(self, filename: str) -> None:
        files.remove(f"{self.directory}/{filename}")
        files.remove(f"{self.directory}/{filename}{SIDECAR_SUFFIX}")

    def _inspect(self, key: str, filename: str) -> Located | None:
        """The record in `filename`, if that file exists and holds `key`."""
        path = f"{self.directory}/{filename}"
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        side = files.read_json(path + SIDECAR_SUFFIX)
        ctype: str | None
        expires_at = None
        if side is not None:
            side_key, ctype = files.sidecar_fields(side)
            expires_at = files.sidecar_expiry(side)
            if side_key is not None and side_key != key:
                return None
            if ctype is None:
                entry = layout.classify(filename)
                ctype = entry.content_type if entry is not None else BINARY_TYPE
        else:
            entry = layout.classify(filename)
            if entry is None:
                return None
            if entry.key == key:
                ctype = entry.content_type
            elif filename in (key, layout.crawlee_filename(key)):
                ctype = BINARY_TYPE
            else:
                return None
            if not entry.extension_known and key in self._input_keys:
                ctype = None  # a bare INPUT file: JSON if it parses, bytes otherwise
        return Located(filename, ctype, st.st_size, st.st_mtime_ns, expires_at)

    def _inspect_all(self, key: str) -> list[Located]:
        return [f for name in layout.candidate_filenames(key) if (f := self._inspect(key, name)) is not None]

    def _probe(self, key: str) -> Located | None:
        """The newest of the files that may hold `key` (several only after racing writers)."""
        found = self._inspect_all(key)
        return max(found, key=lambda f: f.mtime_ns) if found else None

    def _index(self) -> None:
        self._files = {key: entry[0] for key, entry in self._scan().items()}
        self._indexed = True

    def _scan(self) -> dict[str, tuple[str, str | None, int | None]]:
        """Every record in the folder: key -> (file name, content type, own expiry)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return {}
        present = set(names)
        found: dict[str, tuple[str, str | None, int | None]] = {}
        clashes: dict[str, list[str]] = {}
        for name in names:
            if layout.is_reserved(name):
                continue
            expires_at = None
            if name + SIDECAR_SUFFIX in present:
                key, ctype, expires_at = self._sidecar_entry(name)
                if key is None:
                    continue
            else:
                pair = layout.key_and_type(name)
                if pair is None:
                    continue
                key, ctype = pair
            if key in found:
                clashes.setdefault(key, [found[key][0]]).append(name)
            found[key] = (name, ctype, expires_at)
        for key in clashes:
            newest = self._probe(key)
            if newest is not None:
                found[key] = (newest.filename, newest.content_type, newest.expires_at)
        return found

    def _sidecar_entry(self, filename: str) -> tuple[str | None, str | None, int | None]:
        side = files.read_json(f"{self.directory}/{filename}{SIDECAR_SUFFIX}")
        if side is None:
            return None, None, None  # removed while we were listing
        key, ctype = files.sidecar_fields(side)
        entry = layout.classify(filename)
        if key is None:  # a sidecar without its key: the name is the key, as crawlee encodes it
            key = entry.key if entry is not None and entry.extension_known else unquote(filename)
        if ctype is None:
            ctype = entry.content_type if entry is not None else BINARY_TYPE
        return key, ctype, files.sidecar_expiry(side)


def _file_chunks(file: BinaryIO, offset: int, length: int | None, chunk_size: int) -> Iterator[bytes]:
    with file:
        if offset > 0:
            file.seek(offset)
        elif offset < 0:  # the last -offset bytes
            file.seek(max(os.fstat(file.fileno()).st_size + offset, 0))
        left = length
        while left is None or left > 0:
            chunk = file.read(chunk_size if left is None else min(chunk_size, left))
            if not chunk:
                return
            if left is not None:
                left -= len(chunk)
            yield chunk


def _sniffed_type(path: str) -> str:
    """The content type of a bare input file: JSON when it parses, else bytes (as reading decides)."""
    try:
        json.loads(files.read_file(path) or b"")
    except ValueError:
        return BINARY_TYPE
    return JSON_TYPE
