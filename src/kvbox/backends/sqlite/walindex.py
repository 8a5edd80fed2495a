"""Noticing commits to a WAL-mode SQLite database without calling into SQLite.

Every commit rewrites the header of the database's WAL index (the `-shm` file beside it,
shared memory for every connection; https://sqlite.org/walformat.html): its change counter,
frame count and checksums all move. `WalIndexWatch` maps the file read-only and compares
the header's first copy with what it saw last. That is a memory read: unlike a statement
(`PRAGMA data_version`), it never lets go of the GIL, so a worker answering from its caches
does not hand the interpreter to the server's threads and wait to get it back on every
request.

A read that races a commit may see a half-written header. That counts as a change (a
spurious one only costs the caches a reload); the header of a commit is complete before the
commit returns, so once a write is acknowledged every later read sees it.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

HEADER_SIZE = 48  # the first of the header's two copies


class WalIndexWatch:
    """A counter that moves whenever any connection, in any process, commits to the database."""

    def __init__(self, map_: mmap.mmap) -> None:
        self._map = map_
        self._seen = map_[:HEADER_SIZE]
        self._changes = 0

    @classmethod
    def open(cls, database: Path) -> WalIndexWatch | None:
        """The watch of `database`'s WAL index, or None when it has none to map (callers then
        ask SQLite). A connection in WAL mode must be open and must have read the database."""
        try:
            fd = os.open(f"{database}-shm", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            if os.fstat(fd).st_size < HEADER_SIZE:
                return None
            return cls(mmap.mmap(fd, HEADER_SIZE, mmap.MAP_SHARED, mmap.PROT_READ))
        except (OSError, ValueError):
            return None
        finally:
            os.close(fd)  # the mapping keeps the file

    def changes(self) -> int:
        header = self._map[:HEADER_SIZE]
        if header != self._seen:
            self._seen = header
            self._changes += 1
        return self._changes

    def close(self) -> None:
        self._map.close()
