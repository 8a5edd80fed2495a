"""Record lifecycle under load: the sweeper reclaiming a store of expiring records, and a delete
by prefix, each while a writer keeps writing.

- Sweep: a store of N small records whose expiry instants are spread over a window (a
  minute in the full run) expires while a paced writer PUTs into another store. The writer's
  PUT latency is compared with the same run on the same data without expiry; the expiring
  store must end empty (0 records, 0 bytes).
- Delete by prefix: one `DELETE .../records?prefix=` of N records while a paced writer PUTs
  into the same store: the time to answer, and the longest PUT the writer saw while the rows
  were being reclaimed.

The stores are populated in-process through `MetadataIndex.put_record` (small inline bodies;
their own expiry as an offset from 0) into templates kept under bench/.cache; each run copies
a template and, for the expiring run, moves the offsets to start a few seconds after the
server does. Servers listen on 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.report import Report
from bench.servers import BENCH_TOKEN, Server, auth_headers, start_kvbox

CACHE_VERSION = 1
VALUE = b"value-01"
BODY = b"w" * 1024
LEAD_S = 8.0  # from moving the expiry offsets to the first expiry: server start and warm-up
WRITER_THREADS = 4
POPULATE_CHUNK = 512
STALL_TARGET_MS = 100.0


@dataclass(frozen=True)
class Template:
    data_dir: Path
    store_id: str  # N records `key-%08d`, expiring at offsets 0..window (or never)
    writes_id: str  # empty: the writer's store in the sweep run


def key_at(i: int) -> str:
    return f"key-{i:08d}"


def ensure_template(cache_root: Path, keys: int, *, window_ms: int | None) -> Template:
    """A data dir (user `admin` with BENCH_TOKEN) holding the expiring store and the writer's store."""
    from kvbox.backends.sqlite.schema import SCHEMA_VERSION

    kind = f"exp{window_ms}" if window_ms is not None else "plain"
    final = cache_root / f"lifecycle-v{CACHE_VERSION}-schema{SCHEMA_VERSION}-{keys}-{kind}"
    if (final / "ready.json").exists():
        meta = json.loads((final / "ready.json").read_text())
        return Template(final / "data", meta["store_id"], meta["writes_id"])
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    store_id, writes_id = asyncio.run(_populate(partial / "data", keys, window_ms))
    print(f"    populated {keys:,} records in {time.perf_counter() - started:.0f} s", flush=True)
    (partial / "ready.json").write_text(json.dumps({"store_id": store_id, "writes_id": writes_id}))
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return Template(final / "data", store_id, writes_id)


async def _populate(data_dir: Path, keys: int, window_ms: int | None) -> tuple[str, str]:
    from kvbox.core.models import RecordMeta
    from kvbox.service.container import build_services
    from kvbox.service.principal import Principal
    from kvbox.service.settings import Settings

    services = build_services(Settings(data_dir=data_dir, backend="sqlite"))
    try:
        issued = await services.users.create_user("admin", token=BENCH_TOKEN)
        owner = Principal(user=issued.user, token=issued.token)
        store = (await services.stores.get_or_create(owner, name="lifecycle"))[0].store
        writes = (await services.stores.get_or_create(owner, name="writes"))[0].store
        now = services.clock.now_ms()

        def meta(i: int) -> RecordMeta:
            at = None if window_ms is None else i * window_ms // keys
            return RecordMeta(key_at(i), "application/octet-stream", "identity", len(VALUE), f"{i:024x}", now,
                              VALUE, None, at)  # fmt: skip

        for first in range(0, keys, POPULATE_CHUNK):  # concurrent puts share group commits
            chunk = range(first, min(first + POPULATE_CHUNK, keys))
            await asyncio.gather(*(services.index.put_record(store.id, meta(i)) for i in chunk))
        return store.id, writes.id
    finally:
        await services.close()


def working_copy(template: Template, workdir: Path, *, expire_from_ms: int | None) -> Path:
    """A copy of the template's data dir; with `expire_from_ms`, the expiry offsets start then."""
    target = workdir / f"data-{time.monotonic_ns()}"
    shutil.copytree(template.data_dir, target)
    if expire_from_ms is not None:
        conn = sqlite3.connect(target / "kvbox.sqlite3", isolation_level=None)
        try:
            conn.execute("UPDATE records SET expires_at = expires_at + ? WHERE expires_at IS NOT NULL",
                         (expire_from_ms,))  # fmt: skip
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()
    # The copy's dirty pages go to disk now, not during the timed window (the kernel writes
    # them back about 30 s after they were dirtied, in the middle of a run).
    os.sync()
    return target


@dataclass
class PacedWriter:
    """PUTs of 1 KiB at a fixed total rate over a few keep-alive connections; every latency is
    kept with the time it was sent, so a window of the run can be looked at afterwards."""

    url: str  # the store's records URL
    rate: float
    samples: list[tuple[float, float]] = field(default_factory=list)  # (sent at, latency ms)
    errors: int = 0
    keys: set[str] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        for n in range(WRITER_THREADS):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _run(self, n: int) -> None:
        interval = WRITER_THREADS / self.rate
        headers = {**auth_headers(), "Content-Type": "application/octet-stream"}
        with httpx.Client(headers=headers, timeout=30) as client:
            due = time.perf_counter() + n * interval / WRITER_THREADS
            i = n
            while not self._stop.is_set():
                delay = due - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                key = f"w-{i % 1000:05d}"
                sent = time.perf_counter()
                try:
                    ok = client.put(f"{self.url}/{key}", content=BODY).status_code == 201
                except httpx.HTTPError:
                    ok = False
                took = (time.perf_counter() - sent) * 1000
                with self._lock:
                    self.samples.append((sent, took))
                    self.errors += not ok
                    self.keys.add(key)
                due += interval
                i += WRITER_THREADS

    def window(self, start: float, end: float) -> list[float]:
        with self._lock:
            return [ms for sent, ms in self.samples if start <= sent < end]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


def lat(values: list[float]) -> str:
    if not values:
        return "no samples"
    p50, p99 = statistics.median(values), pct(values, 0.99)
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {max(values):.1f} ms (n={len(values)})"


def store_counts(server: Server, store_id: str) -> tuple[int, int]:
    r = httpx.get(f"{server.url}/v2/key-value-stores/{store_id}", headers=auth_headers(), timeout=30)
    r.raise_for_status()
    data = r.json()["data"]
    return int(data["recordCount"]), int(data["stats"]["storageBytes"])


def _sweep_phase(template: Template, workdir: Path, logs: Path, *, keys: int, workers: int, window_s: float,
                 rate: float, expiring: bool) -> tuple[list[float], int, tuple[int, int], float]:  # fmt: skip
    """One run: (writer latencies while the records expire, errors, the store's counts at the
    end, seconds from the last expiry until the store was empty)."""
    expire_from = int(time.time() * 1000 + LEAD_S * 1000)
    data_dir = working_copy(template, workdir, expire_from_ms=expire_from if expiring else None)
    try:
        with start_kvbox(data_dir, workers, logs) as kv:
            writer = PacedWriter(f"{kv.url}/v2/key-value-stores/{template.writes_id}/records", rate)
            writer.start()
            first = expire_from / 1000
            last = first + window_s
            time.sleep(max(0.0, last + 2 - time.time()))
            writer.stop()
            start = time.perf_counter() - (time.time() - first)
            latencies = writer.window(start, start + window_s)
            emptied = float("nan")
            counts = store_counts(kv, template.store_id)
            # Reclaiming is paced: a few thousand rows a second on a slow machine.
            deadline = time.time() + max(180.0, keys / 2000)
            while expiring and counts != (0, 0) and time.time() < deadline:
                time.sleep(0.5)
                counts = store_counts(kv, template.store_id)
            if expiring and counts == (0, 0):
                emptied = max(0.0, time.time() - last)
            return latencies, writer.errors, counts, emptied
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def run_sweep(report: Report, *, cache_root: Path, keys: int, window_s: float, workers: int, rate: float,
              workdir: Path, logs: Path) -> None:  # fmt: skip
    section = f"sweep {keys:,} expiring records"
    expiring = ensure_template(cache_root, keys, window_ms=int(window_s * 1000))
    plain = ensure_template(cache_root, keys, window_ms=None)

    def phase(template: Template, *, expiring: bool) -> tuple[list[float], int, tuple[int, int], float]:
        return _sweep_phase(template, workdir, logs, keys=keys, workers=workers, window_s=window_s, rate=rate,
                            expiring=expiring)  # fmt: skip

    base, base_errors, _, _ = phase(plain, expiring=False)
    swept, errors, counts, emptied = phase(expiring, expiring=True)
    ratio = pct(swept, 0.99) / pct(base, 0.99)
    report.check(
        section, f"PUT p99 of a writer ({rate:.0f}/s) while they expire over {window_s:.0f} s", lat(swept),
        baseline=f"same run without expiry: {lat(base)}", ratio=f"{ratio:.2f}x", target="p99 ≤ 1.10x",
        passed=ratio <= 1.10, valid=errors == 0 and base_errors == 0,
    )  # fmt: skip
    report.check(
        section, "the expiring store at the end",
        f"{counts[0]} records, {counts[1]} bytes; empty {emptied:.1f} s after the last expiry",
        baseline=f"{keys:,} records before", ratio="—", target="0 records, 0 bytes", passed=counts == (0, 0),
    )  # fmt: skip
    report.note(
        f"{section}: {keys:,} inline records whose own expiry is spread evenly over {window_s:.0f} s, on SQLite "
        f"with {workers} worker(s) and the default sweeper; a writer PUTs 1 KiB records at {rate:.0f}/s into "
        "another store over 4 keep-alive connections. Latencies are those of PUTs sent during the expiry window; "
        "the baseline is the same run on the same data without expiry."
    )


def run_delete_prefix(report: Report, *, cache_root: Path, keys: int, workers: int, rate: float, workdir: Path,
                      logs: Path) -> None:  # fmt: skip
    section = f"delete by prefix, {keys:,} records"
    template = ensure_template(cache_root, keys, window_ms=None)
    data_dir = working_copy(template, workdir, expire_from_ms=None)
    try:
        with start_kvbox(data_dir, workers, logs) as kv:
            records = f"{kv.url}/v2/key-value-stores/{template.store_id}/records"
            writer = PacedWriter(records, rate)
            writer.start()
            time.sleep(3)
            before_start = time.perf_counter() - 2
            began = time.perf_counter()
            r = httpx.delete(records, params={"prefix": "key-"}, headers=auth_headers(), timeout=120)
            answered = time.perf_counter()
            deleted = r.json().get("data", {}).get("deletedCount") if r.status_code == 200 else None
            deadline = time.monotonic() + 300
            while store_counts(kv, template.store_id)[0] > len(writer.keys) and time.monotonic() < deadline:
                time.sleep(0.2)
            reclaimed = time.perf_counter()
            time.sleep(1)
            writer.stop()
        before = writer.window(before_start, began)
        during = writer.window(began, reclaimed)
        ok = deleted == keys and writer.errors == 0 and bool(during)
        report.check(
            section, "time to answer", f"{(answered - began) * 1000:.0f} ms (deletedCount {deleted})",
            baseline="—", ratio="—", target=f"deletedCount {keys:,}", passed=deleted == keys, valid=ok,
        )  # fmt: skip
        report.check(
            section, f"a writer of the same store ({rate:.0f} PUT/s) until the rows were reclaimed",
            f"longest PUT {max(during):.1f} ms; {lat(during)}; reclaimed in {reclaimed - began:.1f} s",
            baseline=f"before the delete: {lat(before)}", ratio=f"{pct(during, 0.99) / pct(before, 0.99):.2f}x p99",
            target=f"longest PUT < {STALL_TARGET_MS:.0f} ms", passed=max(during) < STALL_TARGET_MS, valid=ok,
        )  # fmt: skip
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    report.note(
        f"{section}: one DELETE .../records?prefix=key- on a store of {keys:,} inline records on SQLite with "
        f"{workers} worker(s), while a writer PUTs 1 KiB records into the same store at {rate:.0f}/s; 'reclaimed' "
        "is when the store's record count fell back to the writer's own records."
    )
