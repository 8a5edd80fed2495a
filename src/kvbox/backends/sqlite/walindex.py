"""Noticing commits to a WAL-mode SQLite database without calling into SQLite.

Every commit rewrites the header of the database's WAL index (the `-shm` file beside it,
shared memory for every connection; https://sqlite.org/walformat.html): its change counter,
frame count and checksums all move. `WalIndexWatch` reads the header's first copy where
SQLite itself has mapped the file into this process, and compares it with what it saw last.
That is a memory read: unlike a statement (`PRAGMA data_version`), it never lets go of the
GIL, so a worker answering from its caches does not hand the interpreter to the server's
threads and wait to get it back on every request.

The watch opens no descriptor of its own on the `-shm` file: SQLite's locks on it are POSIX
locks, which a process drops on every descriptor of the file when it closes any one of
them. It reads SQLite's mapping, found in /proc/self/maps (Linux; elsewhere callers ask
SQLite), and must not be read once the connection that keeps the mapping is closed.

A read that races a commit may see a half-written header. That counts as a change (a
spurious one only costs the caches a reload); the header of a commit is complete before the
commit returns, so once a write is acknowledged every later read sees it.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

HEADER_SIZE = 48  # the first of the header's two copies
MAPS = "/proc/self/maps"


class WalIndexWatch:
    """A counter that moves whenever any connection, in any process, commits to the database."""

    def __init__(self, address: int) -> None:
        self._header = (ctypes.c_char * HEADER_SIZE).from_address(address)
        self._seen = self._header.raw
        self._changes = 0

    @classmethod
    def open(cls, database: Path) -> WalIndexWatch | None:
        """The watch of `database`'s WAL index, or None when SQLite has not mapped it here
        (callers then ask SQLite). A connection in WAL mode must be open, must have read the
        database, and must stay open while the watch is read."""
        address = sqlite_mapping(f"{os.path.realpath(database)}-shm")
        return cls(address) if address is not None else None

    def changes(self) -> int:
        header = self._header.raw
        if header != self._seen:
            self._seen = header
            self._changes += 1
        return self._changes


def sqlite_mapping(path: str, maps: str = MAPS) -> int | None:
    """The start of this process's mapping of `path` from offset 0, if there is one."""
    try:
        with open(maps, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                fields = line.rstrip("\n").split(None, 5)
                if len(fields) == 6 and fields[5] == path and int(fields[2], 16) == 0:
                    start, end = (int(bound, 16) for bound in fields[0].split("-"))
                    if end - start >= HEADER_SIZE:
                        return start
    except (OSError, ValueError):
        return None
    return None
