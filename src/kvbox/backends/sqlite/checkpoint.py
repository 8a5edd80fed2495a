"""WAL checkpoints off the event loop.

SQLite checkpoints automatically in whichever connection commits once the WAL passes 1,000
pages, and that checkpoint writes the pages back into the database file and syncs it: tens
to hundreds of milliseconds during which the committing event loop serves nothing. The
index's connections turn that off, and each process runs passive checkpoints on a thread
of its own instead. A passive checkpoint takes no lock that writers need, so record writes
go on while it copies; two processes checkpointing at once only means one finds it busy.

A passive checkpoint never starts the WAL over: the next writer does, and only once every
frame has been copied back. Under a steady stream of commits that moment never comes, and
the WAL grows as long as the writes go on (1.1 GB after 12 s of PUTs at full speed on a
2-core machine). So once a passive checkpoint leaves `RESTART_FRAMES` or more frames in the
WAL, more passive passes copy what came in meanwhile until a pass finds only a few frames
new, and then a restarting checkpoint copies those and has the next writer start the WAL
from its beginning. Writers wait for that last step alone (it holds the write lock), and the
file keeps its size for reuse: cutting it back and growing it again cost a big store's PUTs
a fifth of their rate.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("kvbox")

CHECKPOINT_INTERVAL_S = 0.25
RESTART_FRAMES = 65_536  # 256 MiB of SQLite's default 4 KiB pages
RESTART_WAIT_MS = 20  # how long the restarting checkpoint waits for the write lock and readers
_CATCH_UP_PASSES = 8
_FEW_FRAMES = 256


class Checkpointer:
    """A daemon thread that checkpoints the database every `interval_s` (a checkpoint with
    nothing to copy costs next to nothing)."""

    def __init__(
        self, path: Path, *, interval_s: float = CHECKPOINT_INTERVAL_S, restart_frames: int = RESTART_FRAMES
    ) -> None:
        self._path = path
        self._interval_s = interval_s
        self._restart_frames = restart_frames
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
                        # Only the restarting checkpoint waits; a passive one never does.
                        conn.execute(f"PRAGMA busy_timeout = {RESTART_WAIT_MS}")
                    self._checkpoint(conn)
                except sqlite3.Error as error:
                    # Busy (another process is checkpointing) or a passing failure: try next time.
                    log.debug("WAL checkpoint of %s skipped: %s", self._path, error)
        finally:
            if conn is not None:
                conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        frames, copied = _passive(conn)
        if frames < self._restart_frames:
            return
        for _ in range(_CATCH_UP_PASSES):
            before = copied
            _, copied = _passive(conn)
            if copied - before <= _FEW_FRAMES:  # also true when a writer started the WAL over
                conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                return


def _passive(conn: sqlite3.Connection) -> tuple[int, int]:
    """(frames in the WAL, frames copied back) after a passive checkpoint."""
    _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return frames, copied
