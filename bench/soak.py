"""Soak: mixed load on `kvbox serve` for minutes, with a few SIGKILLs and restarts.

Client threads each own a set of keys and put (small and blob-sized bodies), get, delete
and list them, remembering the last write the server acknowledged for every key. The
server is killed with SIGKILL a few times and started again on the same data and port
(requests meanwhile fail to connect and are counted apart). At the end every key is read
back: an acknowledged write that is not there (or a deleted key that came back) is a lost
write, and the target is zero. Also reported: answers by status and the growth of the
server's resident memory within each run between kills.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.report import Report
from bench.servers import Server, auth_headers, create_store, start_kvbox, tree_rss

THREADS = 8
KEYS_PER_THREAD = 40
GONE = "deleted"


@dataclass
class Ledger:
    """What one client thread knows the server must hold for its keys."""

    acked: dict[str, str] = field(default_factory=dict)  # key -> digest of the last acknowledged body, or GONE
    maybe: dict[str, set[str]] = field(default_factory=dict)  # key -> outcomes of writes cut off mid-flight
    statuses: Counter[str] = field(default_factory=Counter)


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class Soak:
    def __init__(self, url: str, store: str, deadline: float) -> None:
        self.url, self.store, self.deadline = url, store, deadline
        self.ledgers = [Ledger() for _ in range(THREADS)]

    def run_client(self, n: int) -> None:
        ledger, rng = self.ledgers[n], random.Random(n)
        base = f"{self.url}/v2/key-value-stores/{self.store}"
        with httpx.Client(headers=auth_headers(), timeout=10) as http:
            while time.monotonic() < self.deadline:
                key = f"t{n}-k{rng.randrange(KEYS_PER_THREAD)}"
                op = rng.random()
                try:
                    if op < 0.45:
                        self._put(http, ledger, rng, f"{base}/records/{key}", key)
                    elif op < 0.55:
                        self._delete(http, ledger, f"{base}/records/{key}", key)
                    elif op < 0.95:
                        ledger.statuses[str(http.get(f"{base}/records/{key}").status_code)] += 1
                    else:
                        ledger.statuses[str(http.get(f"{base}/keys", params={"prefix": f"t{n}-"}).status_code)] += 1
                except httpx.TransportError:
                    ledger.statuses["no connection"] += 1
                    time.sleep(0.05)  # the server is restarting

    @staticmethod
    def _put(http: httpx.Client, ledger: Ledger, rng: random.Random, url: str, key: str) -> None:
        body = os.urandom(rng.choice([100, 2_000, 300_000]))
        try:
            r = http.put(url, content=body, headers={"content-type": "application/octet-stream"})
        except httpx.TransportError:
            ledger.maybe.setdefault(key, set()).add(_digest(body))  # it may have landed
            raise
        ledger.statuses[str(r.status_code)] += 1
        if r.status_code == 201:
            ledger.acked[key] = _digest(body)
            ledger.maybe.pop(key, None)

    @staticmethod
    def _delete(http: httpx.Client, ledger: Ledger, url: str, key: str) -> None:
        try:
            r = http.delete(url)
        except httpx.TransportError:
            ledger.maybe.setdefault(key, set()).add(GONE)
            raise
        ledger.statuses[str(r.status_code)] += 1
        if r.status_code == 204:
            ledger.acked[key] = GONE
            ledger.maybe.pop(key, None)

    def lost_writes(self) -> tuple[int, int]:
        """(acknowledged writes checked, of which lost): read every key back once."""
        checked = lost = 0
        base = f"{self.url}/v2/key-value-stores/{self.store}/records"
        with httpx.Client(headers=auth_headers(), timeout=30) as http:
            for ledger in self.ledgers:
                for key, want in ledger.acked.items():
                    r = http.get(f"{base}/{key}")
                    got = GONE if r.status_code == 404 else _digest(r.content) if r.status_code == 200 else "?"
                    checked += 1
                    if got != want and got not in ledger.maybe.get(key, set()):
                        lost += 1
        return checked, lost


def run_soak(report: Report, *, seconds: float, kills: int, workers: int, workdir: Path, logs: Path) -> None:
    data = workdir / "soak-data"
    server = start_kvbox(data, workers, logs)
    port = int(server.url.rsplit(":", 1)[1])
    soak = Soak(server.url, create_store(server, "soak"), time.monotonic() + seconds)
    threads = [threading.Thread(target=soak.run_client, args=(n,), daemon=True) for n in range(THREADS)]
    for t in threads:
        t.start()
    growth: list[int] = []
    lives = kills + 1
    for life in range(lives):
        server = _one_life(server, soak, seconds / lives, growth, last=life == lives - 1, data=data, port=port,
                           workers=workers, logs=logs)  # fmt: skip
    for t in threads:
        t.join(timeout=60)
    try:
        checked, lost = soak.lost_writes()
    finally:
        server.stop()
    _report(report, soak, checked, lost, growth, seconds=seconds, kills=kills)


def _one_life(server: Server, soak: Soak, span: float, growth: list[int], *, last: bool, data: Path, port: int,
              workers: int, logs: Path) -> Server:  # fmt: skip
    """Load one server process for `span` seconds, then SIGKILL it and start the next (unless last)."""
    ends = time.monotonic() + span
    time.sleep(min(10.0, span / 5))  # warm up: caches, pools, the first blobs
    warm = tree_rss(server.proc.pid)
    while time.monotonic() < ends and time.monotonic() < soak.deadline:
        time.sleep(0.5)
    growth.append(tree_rss(server.proc.pid) - warm)
    if last:
        return server
    os.killpg(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=15)
    return start_kvbox(data, workers, logs, port=port)


def _report(report: Report, soak: Soak, checked: int, lost: int, growth: list[int], *, seconds: float,
            kills: int) -> None:  # fmt: skip
    statuses: Counter[str] = Counter()
    for ledger in soak.ledgers:
        statuses.update(ledger.statuses)
    total = sum(statuses.values())
    report.info("soak", f"requests in {seconds:.0f} s with {kills} SIGKILLs", f"{total:,}")
    report.info("soak", "answers by status", ", ".join(f"{s}: {n:,}" for s, n in sorted(statuses.items())))
    errors = sum(n for s, n in statuses.items() if s.isdigit() and int(s) >= 500)
    report.check("soak", "5xx answers", str(errors), baseline="—", ratio="—", target="0", passed=errors == 0)
    report.check("soak", f"acknowledged writes lost (of {checked:,} keys checked)", str(lost), baseline="—",
                 ratio="—", target="0", passed=lost == 0)  # fmt: skip
    mib = [g / 2**20 for g in growth]
    report.info("soak", "RSS growth per server life after warm-up (MiB)", ", ".join(f"{m:+.1f}" for m in mib))
