"""A store folder's write lock, shared by every process and thread that writes the folder.

Record writes hold it only while they put their new file in place; `LocalStore.update`
holds it from reading the old value to writing the new one, so an update never loses
another kvbox writer's change, in this process or another. It is `flock` on the folder
itself: the kernel drops it when its holder exits, even on `kill -9`, so a crash never
leaves a store locked. Tools that do not take it (crawlee) still write atomically, but may
land between an update's read and its write.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows has no flock
    fcntl = None  # type: ignore[assignment]


class FolderLock:
    """The lock of one store folder. Reentrant within a thread (an update writes under the
    lock it already holds); other threads and processes wait for it."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._mutex = threading.RLock()  # between this process's threads
        self._depth = 0
        self._fd: int | None = None

    @contextmanager
    def held(self) -> Iterator[None]:
        with self._mutex:
            if self._depth == 0:
                self._fd = _lock(self._directory)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    fd, self._fd = self._fd, None
                    _unlock(fd)


def _lock(directory: str) -> int | None:
    """Take the folder's lock, waiting for other processes; returns what `_unlock` releases.
    The folder is opened anew each time: one that was deleted and created again by another
    process is locked where that process locks it."""
    if fcntl is None:  # pragma: no cover
        return None  # only this process's threads are kept apart
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock(fd: int | None) -> None:
    if fd is None or fcntl is None:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
