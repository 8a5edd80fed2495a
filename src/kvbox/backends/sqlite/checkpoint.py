"""WAL checkpoints off the event loop.

SQLite checkpoints automatically in whichever connection commits once the WAL passes 1,000
pages, and that checkpoint writes the pages back into the database file and syncs it: tens
to hundreds of milliseconds during which the committing event loop serves nothing. The
index's connections turn that off, and each process runs passive checkpoints on a thread
of its own instead. A passive checkpoint takes no lock that writers need, so record writes
go on while it copies; two processes checkpointing at once only means one finds it busy.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("kvbox")

CHECKPOINT_INTERVAL_S = 0.25


class Checkpointer:
    """A daemon thread that checkpoints the database every `interval_s` (a checkpoint with
    nothing to copy costs next to nothing)."""

    def __init__(self, path: Path, *, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self._path = path
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kvbox-checkpoint", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (after the checkpoint in progress, if any)."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=30)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    if conn is None:
                        # mode=rw: never create a database that is not there (any more).
                        conn = sqlite3.connect(
                            f"{self._path.resolve().as_uri()}?mode=rw", uri=True, timeout=0, isolation_level=None
                        )
                        conn.execute("PRAGMA wal_autocheckpoint = 0")
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as error:
                    # Busy (another process is checkpointing) or a passing failure: try next time.
                    log.debug("WAL checkpoint of %s skipped: %s", self._path, error)
        finally:
            if conn is not None:
                conn.close()
