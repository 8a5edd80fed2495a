"""One big record: streaming PUT then GET, with server peak RSS and MiB/s against the disk.

Baselines, all measured in this run on the filesystem of the data dir:
- disk: a file written with os.write in 1 MiB chunks (+ fsync), then read back twice:
  right after writing (page cache, as kvbox's GET of a just-written blob) and after
  posix_fadvise(DONTNEED) evicted it (the device, where the kernel honours the hint);
- HTTP path: the bare app under granian, receiving and sending the same number of bytes
  from memory through the same httpx client, with its peak RSS sampled the same way.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

import httpx

from bench.report import Report, fmt_ratio
from bench.rss import RssSampler
from bench.servers import Server, auth_headers, create_store, start_bare, start_kvbox, tree_rss

MIB = 1 << 20
RSS_TARGET = 150 * MIB
SPEED_TARGET = 0.40
TRANSFER_LIMIT_S = 300.0


@dataclass(frozen=True)
class DiskSpeed:
    write_cached: float  # MiB/s, os.write calls only
    write_fsync: float  # MiB/s, including the final fsync
    read_warm: float
    read_cold: float


def _mibps(size: int, seconds: float) -> float:
    return size / MIB / seconds if seconds > 0 else float("inf")


def disk_speed(directory: Path, size: int) -> DiskSpeed:
    path = directory / "disk-baseline.bin"
    chunk = os.urandom(MIB)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            t0 = time.perf_counter()
            for _ in range(size // MIB):
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            t1 = time.perf_counter()
            os.fsync(fd)
            t2 = time.perf_counter()
        finally:
            os.close(fd)
        warm = _read_all(path, size, evict=False)
        cold = _read_all(path, size, evict=True)
    finally:
        path.unlink(missing_ok=True)
    return DiskSpeed(_mibps(size, t1 - t0), _mibps(size, t2 - t0), warm, cold)


def _read_all(path: Path, size: int, *, evict: bool) -> float:
    buf = bytearray(MIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        if evict:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        t = time.perf_counter()
        total = 0
        while n := os.readv(fd, [buf]):
            total += n
        elapsed = time.perf_counter() - t
    finally:
        os.close(fd)
    if total != size:
        raise RuntimeError(f"read {total} bytes of {size} from {path}")
    return _mibps(size, elapsed)


def _body(size: int) -> Iterator[bytes]:
    """`size` bytes in 1 MiB chunks, one buffer reused, so the client holds O(1 MiB)."""
    chunk = os.urandom(MIB)
    deadline = time.monotonic() + TRANSFER_LIMIT_S
    sent = 0
    while sent < size:
        if time.monotonic() > deadline:
            raise TimeoutError(f"upload exceeded {TRANSFER_LIMIT_S:.0f} s")
        part = chunk if size - sent >= MIB else chunk[: size - sent]
        sent += len(part)
        yield part


@dataclass(frozen=True)
class Transfer:
    seconds: float
    peak_rss: int
    idle_rss: int
    peak_pss: int

    def mibps(self, size: int) -> float:
        return _mibps(size, self.seconds)


def _put(client: httpx.Client, server: Server, url: str, size: int) -> Transfer:
    headers = {**auth_headers(), "Content-Type": "application/octet-stream", "Content-Length": str(size)}
    idle = tree_rss(server.proc.pid)
    with RssSampler(server.proc.pid, max_seconds=TRANSFER_LIMIT_S) as rss:
        t = time.perf_counter()
        r = client.put(url, content=_body(size), headers=headers)
        elapsed = time.perf_counter() - t
    if r.status_code >= 300:
        raise RuntimeError(f"PUT of {size} bytes returned {r.status_code}: {r.text[:300]}")
    return Transfer(elapsed, rss.peak, idle, rss.peak_pss)


def _get(client: httpx.Client, server: Server, url: str, size: int) -> Transfer:
    idle = tree_rss(server.proc.pid)
    deadline = time.monotonic() + TRANSFER_LIMIT_S
    received = 0
    with RssSampler(server.proc.pid, max_seconds=TRANSFER_LIMIT_S) as rss:
        t = time.perf_counter()
        with client.stream("GET", url, headers=auth_headers()) as r:
            if r.status_code != 200:
                raise RuntimeError(f"GET returned {r.status_code}")
            # As the transport reads them (64 KiB): re-chunking to 1 MiB would halve httpx's speed.
            for chunk in r.iter_raw():
                received += len(chunk)  # discarded: the client keeps one chunk at a time
                if time.monotonic() > deadline:
                    raise TimeoutError(f"download exceeded {TRANSFER_LIMIT_S:.0f} s")
        elapsed = time.perf_counter() - t
    if received != size:
        raise RuntimeError(f"GET returned {received} bytes, expected {size}")
    return Transfer(elapsed, rss.peak, idle, rss.peak_pss)


def run_bigfile(report: Report, *, size: int, workers: int, workdir: Path, logs: Path, reps: int = 1) -> None:
    """Each figure is the best of `reps` (fastest transfer, highest RSS), baselines alike."""
    label = f"{size // MIB} MiB" if size < 1 << 30 else f"{size / (1 << 30):g} GiB"
    section = f"{label} record, {workers} workers"
    workdir.mkdir(parents=True, exist_ok=True)
    disks = [disk_speed(workdir, size) for _ in range(reps)]
    disk = DiskSpeed(*(max(getattr(d, f) for d in disks) for f in (x.name for x in fields(DiskSpeed))))
    timeout = httpx.Timeout(120.0, connect=10.0)
    with httpx.Client(timeout=timeout) as client:
        with start_bare(workers, logs) as bare:
            bare_put = _best([_put(client, bare, f"{bare.url}/", size) for _ in range(reps)])
            bare_get = _best([_get(client, bare, f"{bare.url}/stream?bytes={size}", size) for _ in range(reps)])
        extra = {"KVBOX_MAX_RECORD_SIZE": "2GiB"}
        with start_kvbox(workdir / "big", workers, logs, extra_env=extra) as kv:
            url = f"{kv.url}/v2/key-value-stores/{create_store(kv, 'big')}/records/big-record"
            puts, gets = [], []
            for _ in range(reps):
                puts.append(_put(client, kv, url, size))
                gets.append(_get(client, kv, url, size))
                client.delete(url, headers=auth_headers()).raise_for_status()
    client_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    _rows(report, section, size, disk, bare_put, bare_get, _best(puts), _best(gets), client_peak)
    report.note(f"{section}: every figure (disk, bare app and kvbox) is the best of {reps} run(s).")


def _best(transfers: list[Transfer]) -> Transfer:
    return Transfer(
        seconds=min(t.seconds for t in transfers),
        peak_rss=max(t.peak_rss for t in transfers),
        idle_rss=transfers[0].idle_rss,
        peak_pss=max(t.peak_pss for t in transfers),
    )


def _rows(
    report: Report, section: str, size: int, disk: DiskSpeed, bare_put: Transfer, bare_get: Transfer,
    put: Transfer, get: Transfer, client_peak: int,
) -> None:  # fmt: skip
    def mib(n: int) -> str:
        return f"{n / MIB:.1f} MiB"

    report.info(section, "disk write, os.write 1 MiB chunks (page cache, before fsync)",
                f"{disk.write_cached:,.0f} MiB/s")  # fmt: skip
    report.info(section, "disk read of the just-written file (page cache)", f"{disk.read_warm:,.0f} MiB/s")
    report.info(section, "disk read after fadvise(DONTNEED) (device)", f"{disk.read_cold:,.0f} MiB/s")
    for name, t, base, bare in (("PUT", put, disk.write_fsync, bare_put), ("GET", get, disk.read_cold, bare_get)):
        speed = t.mibps(size)
        base_label = "disk write incl. fsync" if name == "PUT" else "disk read after fadvise(DONTNEED)"
        report.check(
            section, f"kvbox {name} throughput", f"{speed:,.0f} MiB/s", baseline=f"{base:,.0f} MiB/s ({base_label})",
            ratio=fmt_ratio(speed, base), target=f"≥ {SPEED_TARGET:.2f}", passed=speed >= SPEED_TARGET * base,
        )  # fmt: skip
        report.info(section, f"kvbox {name} vs bare app from memory (same client, no disk)", f"{speed:,.0f} MiB/s",
                    baseline=f"{bare.mibps(size):,.0f} MiB/s", ratio=fmt_ratio(speed, bare.mibps(size)))  # fmt: skip
        report.check(
            section, f"kvbox server peak RSS during {name} (main + workers)", mib(t.peak_rss),
            baseline=f"idle {mib(t.idle_rss)}; bare app {mib(bare.peak_rss)}", ratio="—",
            target=f"< {mib(RSS_TARGET)}", passed=t.peak_rss < RSS_TARGET,
        )  # fmt: skip
        report.info(section, f"kvbox server peak PSS during {name} (shared pages counted once)", mib(t.peak_pss),
                    baseline=f"bare app {mib(bare.peak_pss)}")  # fmt: skip
    report.info(section, "kvbox GET vs page-cache read", f"{get.mibps(size):,.0f} MiB/s",
                baseline=f"{disk.read_warm:,.0f} MiB/s", ratio=fmt_ratio(get.mibps(size), disk.read_warm))  # fmt: skip
    report.info(section, "bench process peak RSS (client; whole run so far)", mib(client_peak))
    report.note(
        f"{section}: httpx streaming upload from a generator (1 MiB chunks, Content-Length set) and streaming "
        "download discarded chunk by chunk; MiB/s = bytes / wall time of the request. Server RSS is the sum "
        "over granian's main process and its workers, sampled every 50 ms from /proc: granian forks its "
        "workers, so pages they share with the main process count once per process in the RSS sum (the "
        "figure the target is about) and once in all in the PSS sum. kvbox runs with "
        "KVBOX_MAX_RECORD_SIZE=2GiB and its default durability (no fsync of blobs), so its PUT is compared "
        "with a disk write that includes fsync as asked, and the page-cache write rate is shown too. The GET "
        "baseline is the device read after posix_fadvise(DONTNEED); kvbox's GET of a blob it just wrote is "
        "likely served from page cache, so the page-cache read is shown too. Big files are deleted afterwards."
    )
