"""Record bodies too large to keep inline, as files under the data directory.

A body is written to `root/tmp/`, then renamed to `root/<2 hex>/<2 hex>/<32 hex>`, so a
file under its final name is always complete. Names are random, never derived from a key.
Page-cache writes and reads run inline; only fsync (in durable mode) goes to a thread.

While `kvbox backup` runs it keeps a lock file in the root fresh, and deletions wait: the
backup's snapshot of the index may still point at a blob a newer write has replaced (see
backup.py). Deferred deletions happen at the next deletion after the backup, or, should
this process stop first, through orphan collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from kvbox.backends.failures import storage_failure
from kvbox.core.errors import StorageError
from kvbox.core.ids import new_blob_name

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: temp files are reclaimed by age alone
    fcntl = None  # type: ignore[assignment]

_BLOB_ID = re.compile(r"[0-9a-f]{32}")
_SHARD = re.compile(r"[0-9a-f]{2}")
_TMP = "tmp"
BACKUP_LOCK = "backup.lock"
# A backup touches its lock every few seconds: one left untouched this long belongs to a backup that died.
BACKUP_LOCK_STALE_S = 60.0
# Deletions remembered while a backup runs, at most; beyond it orphan collection removes them.
MAX_DEFERRED = 100_000


def _check_id(blob_id: str) -> str:
    # Ids come from the index; anything else must never reach the filesystem as a path.
    if _BLOB_ID.fullmatch(blob_id) is None:
        raise StorageError(f"Invalid blob id {blob_id!r}.")
    return blob_id


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup_running(root: Path) -> bool:
    """Whether a backup holds a fresh lock on the blobs under `root`."""
    try:
        touched = os.stat(root / BACKUP_LOCK).st_mtime
    except FileNotFoundError:
        return False
    return time.time() - touched < BACKUP_LOCK_STALE_S


def _older_than(entry: os.DirEntry[str], limit_ms: int) -> bool:
    """Whether a plain file was last modified before `limit_ms`; False if it just vanished."""
    try:
        if not entry.is_file(follow_symlinks=False):
            return False
        return entry.stat(follow_symlinks=False).st_mtime_ns // 1_000_000 < limit_ms
    except FileNotFoundError:  # deleted by a concurrent delete or commit: not ours to report
        return False


class FileBlobWriter:
    """One body being written to a temp file; visible under its id only after `commit`."""

    def __init__(self, store: FileBlobStore, file: BinaryIO, temp_path: Path) -> None:
        self._store = store
        self._file = file
        self._temp_path = temp_path
        self._done = False

    async def write(self, data: bytes) -> None:
        if self._done:
            raise StorageError("This blob was already committed or aborted.")
        try:
            self._file.write(data)
        except OSError as e:
            await self.abort()
            raise storage_failure(f"Could not write a blob: {e}", e) from e

    async def commit(self) -> str:
        """Make the body durable as configured and return its new id."""
        if self._done:
            raise StorageError("This blob was already committed or aborted.")
        try:
            self._file.flush()
            if self._store.durable:
                await asyncio.to_thread(os.fsync, self._file.fileno())
            blob_id = new_blob_name()
            # Renamed before it is closed: closing drops the lock that keeps the sweep away.
            await self._store._install(self._temp_path, blob_id)
            self._file.close()
        except BaseException as e:
            # Also on cancellation: never leave a temp file behind for a writer that is gone.
            await self.abort()
            if isinstance(e, OSError):
                raise storage_failure(f"Could not store a blob: {e}", e) from e
            raise
        self._done = True
        return blob_id

    async def abort(self) -> None:
        """Drop the body. Aborting twice, or after commit, does nothing."""
        if self._done:
            return
        self._done = True
        # Closing flushes the buffer, which fails again after a failed write (disk full);
        # the bytes are being thrown away, so only the descriptor matters and it is closed anyway.
        with contextlib.suppress(OSError):
            self._file.close()
        try:
            self._temp_path.unlink(missing_ok=True)
        except OSError as e:
            raise StorageError(f"Could not remove a blob's temp file: {e}") from e


class FileBlobStore:
    """`BlobStore` over a directory tree of immutable files."""

    def __init__(self, root: Path, *, durable: bool = False, chunk_size: int = 1 << 20) -> None:
        self.root = root
        self.durable = durable
        self.chunk_size = chunk_size
        self._tmp = root / _TMP
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._deferred: set[str] = set()

    def path_of(self, blob_id: str) -> Path:
        """Where the blob with this id lives (whether or not it exists)."""
        _check_id(blob_id)
        return self.root / blob_id[:2] / blob_id[2:4] / blob_id

    async def create(self) -> FileBlobWriter:
        for _ in range(3):
            try:
                fd, name = tempfile.mkstemp(dir=self._tmp, suffix=".part")
            except OSError as e:
                raise storage_failure(f"Could not create a blob: {e}", e) from e
            # Locked until the writer closes the file (or its process dies): the sweep of
            # `tmp/` reclaims only files no live writer holds.
            if _claim(fd, name):
                return FileBlobWriter(self, os.fdopen(fd, "wb"), Path(name))
            os.close(fd)  # a sweep took it between its creation and the lock: make another
        raise StorageError("Could not create a blob: its temp file kept vanishing.")

    async def _install(self, temp_path: Path, blob_id: str) -> None:
        """Rename a finished temp file to its final name (with directory fsyncs if durable)."""
        final = self.path_of(blob_id)
        created = [d for d in (final.parent.parent, final.parent) if not d.exists()]
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp_path, final)
        if self.durable:
            # The rename lives in the leaf directory; a new directory lives in its parent.
            to_sync = {final.parent, *(d.parent for d in created)}
            for d in sorted(to_sync, key=lambda p: len(p.parts), reverse=True):
                await asyncio.to_thread(_fsync_dir, d)

    async def open(self, blob_id: str, *, start: int = 0, end: int | None = None) -> AsyncGenerator[bytes, None]:
        """Open the body now and return bytes `start` to `end` as chunks of `chunk_size`.

        `StorageError` if it is missing. Once open, the body stays readable even if the blob
        is deleted (a newer write replaced it) while it streams.
        """
        path = self.path_of(blob_id)
        try:
            file = path.open("rb")
        except OSError as e:
            raise StorageError(f"Blob {blob_id} is missing or unreadable.") from e
        return self._chunks(blob_id, file, start, None if end is None else max(end - start, 0))

    async def _chunks(self, blob_id: str, file: BinaryIO, start: int, left: int | None) -> AsyncGenerator[bytes, None]:
        with file:
            if start:
                file.seek(start)  # reads nothing before the range
            while left is None or left > 0:
                try:
                    chunk = file.read(self.chunk_size if left is None else min(self.chunk_size, left))
                except OSError as e:
                    raise StorageError(f"Blob {blob_id} could not be read.") from e
                if not chunk:
                    return
                if left is not None:
                    left -= len(chunk)
                yield chunk

    async def delete(self, blob_id: str) -> None:
        """Remove a blob; a missing one is a no-op. While a backup runs, the removal waits."""
        path = self.path_of(blob_id)
        if backup_running(self.root):
            if len(self._deferred) < MAX_DEFERRED:
                self._deferred.add(blob_id)
            return
        if self._deferred:
            self._delete_deferred()
        try:
            path.unlink(missing_ok=True)
        except OSError as e:
            raise StorageError(f"Blob {blob_id} could not be deleted.") from e

    def reclaim_temp(self, *, older_than_ms: int | None = None) -> int:
        """Remove the temp files of writers that are gone (killed mid-upload): those no live
        writer holds locked. Safe at any time, start-up included. Where files cannot be
        locked, only those last written before `older_than_ms` go. Returns how many went."""
        removed = 0
        with os.scandir(self._tmp) as entries:
            for entry in entries:
                if fcntl is None:
                    if older_than_ms is not None and _older_than(entry, older_than_ms):
                        Path(entry.path).unlink(missing_ok=True)
                        removed += 1
                elif entry.is_file(follow_symlinks=False) and _remove_unclaimed(entry.path):
                    removed += 1
        return removed

    def _delete_deferred(self) -> None:
        deferred, self._deferred = self._deferred, set()
        for blob_id in deferred:
            with contextlib.suppress(OSError):  # left for orphan collection
                self.path_of(blob_id).unlink(missing_ok=True)

    async def list_ids(self, *, older_than_ms: int) -> AsyncIterator[str]:
        """Ids of committed blobs last modified before `older_than_ms`, for orphan collection.

        Also removes the temp files of writers that are gone (`reclaim_temp`), and those
        older than `older_than_ms` where files cannot be locked.
        """
        self.reclaim_temp(older_than_ms=older_than_ms)
        for first in _shard_dirs(self.root):
            for second in _shard_dirs(Path(first.path)):
                with os.scandir(second.path) as entries:
                    found = [
                        e.name
                        for e in entries
                        if _BLOB_ID.fullmatch(e.name)
                        and e.name.startswith(first.name + second.name)
                        and _older_than(e, older_than_ms)
                    ]
                for blob_id in found:
                    yield blob_id

    async def ping(self) -> None:
        """A small file written and removed where blobs are written."""
        try:
            fd, name = tempfile.mkstemp(dir=self._tmp, suffix=".ping")
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(name)
        except OSError as e:
            raise StorageError(f"The data directory {self.root} does not take writes: {e}") from e

    async def close(self) -> None:
        return None


def _claim(fd: int, path: str) -> bool:
    """Lock a new temp file for its writer; False if a sweep removed it before the lock was
    taken (the sweep holds the lock while it unlinks, so the name no longer leads here)."""
    if fcntl is None:
        return True
    fcntl.flock(fd, fcntl.LOCK_EX)  # waits only while a sweep holds it: a few microseconds
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _remove_unclaimed(path: str) -> bool:
    """Unlink a temp file unless a live writer holds its lock; whether it was removed."""
    assert fcntl is not None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # gone already
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # a writer is at work on it
    try:
        os.unlink(path)  # under the lock, so a writer that wins it next sees the name gone
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
    return True


def _shard_dirs(path: Path) -> list[os.DirEntry[str]]:
    with os.scandir(path) as entries:
        return sorted(
            (e for e in entries if _SHARD.fullmatch(e.name) and e.is_dir(follow_symlinks=False)),
            key=lambda e: e.name,
        )
