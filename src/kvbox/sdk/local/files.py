"""File primitives of the local layout: atomic writes, reads, sidecars and store metadata.

A write goes to a temporary file in the same folder and is renamed over the target, so a
reader (in this process or another) sees the old file or the new one, never a torn one.
Like crawlee, there is no fsync unless `durable` is asked for: a write survives the process
being killed, not a power loss.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from kvbox.core.clock import iso_ms
from kvbox.core.errors import StorageError
from kvbox.sdk.local.layout import TEMP_PREFIX, TEMP_SUFFIX

_counter = itertools.count()
_OPEN_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def temp_name(directory: str, filename: str) -> str:
    # pid + a process-wide counter is unique across processes and threads without a random
    # draw; the prefix and suffix mark it as nobody's record. The target's name is left out:
    # it may already be as long as a file name can be.
    del filename
    return f"{directory}/{TEMP_PREFIX}{os.getpid()}-{next(_counter)}{TEMP_SUFFIX}"


def fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """A new version of `directory/filename`, written under a temporary name.

    Used as a context manager: leaving the block renames the file over its target in one
    step; an exception removes it instead, leaving the target as it was. `size` counts the
    bytes written so far.
    """

    def __init__(self, directory: str, filename: str, *, durable: bool = False) -> None:
        self.directory = directory
        self.filename = filename
        self.size = 0
        self._durable = durable
        self._tmp = temp_name(directory, filename)
        self._fd: int | None = os.open(self._tmp, _OPEN_FLAGS, 0o666)

    def write(self, data: bytes) -> None:
        if self._fd is None:
            raise ValueError(f"{self.filename} was already committed or discarded")
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self.size += len(data)

    def __enter__(self) -> AtomicFile:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()

    def commit(self) -> None:
        """Rename the file over its target (what leaving the block does); on failure it is removed."""
        try:
            self._commit()
        except BaseException:
            self._discard()
            raise

    def discard(self) -> None:
        """Remove the file, leaving the target as it was (what an exception in the block does)."""
        self._discard()

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _commit(self) -> None:
        if self._durable and self._fd is not None:
            os.fsync(self._fd)
        self._close()
        os.replace(self._tmp, f"{self.directory}/{self.filename}")
        if self._durable:
            fsync_dir(self.directory)

    def _discard(self) -> None:
        with contextlib.suppress(OSError):
            self._close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)


def write_atomic(directory: str, filename: str, data: bytes, *, durable: bool = False) -> None:
    """Replace `directory/filename` with `data` in one step."""
    with AtomicFile(directory, filename, durable=durable) as out:
        out.write(data)


def read_file(path: str) -> bytes | None:
    """The file's bytes, or None when it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return None


def identity(path: str) -> tuple[int, int, int] | None:
    """Which file is at `path` right now (device, inode, change time), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_dev, st.st_ino, st.st_ctime_ns)


def remove(path: str) -> bool:
    """Delete a file; True when it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON object from a file; None when missing. Corrupt files raise `StorageError`."""
    raw = read_file(path)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as err:
        raise StorageError(f"{path} is not valid JSON") from err
    if not isinstance(data, dict):
        raise StorageError(f"{path} does not hold a JSON object")
    return data


def sidecar_fields(data: dict[str, Any]) -> tuple[str | None, str | None]:
    """(key, content type) from a sidecar in crawlee-python (snake_case) or Crawlee JS (camelCase) form."""
    key = data.get("key")
    ctype = data.get("content_type") or data.get("contentType")
    return (key if isinstance(key, str) else None), (ctype if isinstance(ctype, str) else None)


def sidecar_expiry(data: dict[str, Any]) -> int | None:
    """A record's own expiry (ms) from its sidecar's `expires_at` (kvbox's field), if any."""
    when = parse_timestamp(data.get("expires_at") or data.get("expiresAt"))
    return None if when is None else int(when.timestamp() * 1000)


def sidecar_bytes(key: str, content_type: str, size: int, expires_at: int | None = None) -> bytes:
    # The shape crawlee-python 1.x writes, so its tools can read kvbox sidecars too; kvbox adds
    # the record's expiry, which crawlee ignores.
    data: dict[str, Any] = {"key": key, "content_type": content_type, "size": size}
    if expires_at is not None:
        data["expires_at"] = iso_ms(expires_at)
    return json.dumps(data, ensure_ascii=False).encode()


def parse_timestamp(value: Any) -> datetime | None:
    """`2026-01-01 10:00:00+00:00` (crawlee-python) or `2026-01-01T10:00:00.000Z` (JS)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def store_metadata_bytes(
    store_id: str, name: str | None, created: datetime, accessed: datetime, modified: datetime
) -> bytes:
    # crawlee-python's shape (snake_case, str() timestamps), so either tool opens the folder by id.
    payload = {
        "id": store_id,
        "name": name,
        "accessed_at": str(accessed),
        "created_at": str(created),
        "modified_at": str(modified),
    }
    return json.dumps(payload, indent=2, ensure_ascii=False).encode()


def create_exclusive(directory: str, filename: str, data: bytes) -> bool:
    """Write a new file atomically unless it already exists; False when another writer was first."""
    tmp = temp_name(directory, filename)
    fd = os.open(tmp, _OPEN_FLAGS, 0o666)
    try:
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        try:
            os.link(tmp, f"{directory}/{filename}")  # fails if the target exists, unlike rename
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
