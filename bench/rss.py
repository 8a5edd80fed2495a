"""Peak memory of a server's process tree (RSS and PSS sums), sampled every 50 ms in a thread."""

from __future__ import annotations

import threading
import time

from bench.servers import tree_pids, tree_pss, tree_rss

INTERVAL_S = 0.05
REWALK_EVERY = 20  # re-list the workers about once a second, in case granian respawns one


class RssSampler:
    """Use as a context manager around a transfer; read `peak`, `peak_pss` and `samples` afterwards."""

    def __init__(self, pid: int, *, max_seconds: float) -> None:
        self._pid = pid
        self._max_seconds = max_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0
        self.peak_pss = 0
        self.samples = 0

    def _run(self) -> None:
        deadline = time.monotonic() + self._max_seconds
        pids = tree_pids(self._pid)
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.samples % REWALK_EVERY == 0:
                pids = tree_pids(self._pid)
            self.peak = max(self.peak, tree_rss(self._pid, pids))
            self.peak_pss = max(self.peak_pss, tree_pss(self._pid, pids))
            self.samples += 1
            self._stop.wait(INTERVAL_S)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        # One last sample: a short transfer may end between two ticks.
        pids = tree_pids(self._pid)
        self.peak = max(self.peak, tree_rss(self._pid, pids))
        self.peak_pss = max(self.peak_pss, tree_pss(self._pid, pids))
