"""Small records: kvbox GET and PUT of 1 KiB against the bare app's GET, both under wrk.

The bare app and kvbox run side by side with the same worker count. Measurements are
taken in rounds (bare GET, kvbox GET, kvbox PUT), and each ratio is the median of the
per-round ratios, so drift on a shared 2-core machine hits both sides alike.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path

import httpx

from bench.cpus import pin_one_core, unpin
from bench.report import Report
from bench.servers import BENCH_TOKEN, auth_headers, create_store, start_bare, start_kvbox
from bench.wrk import WrkResult, get_script, put_script, run_wrk

RECORD_KEY = "one-kib"
SIZE = 1024
SWEEP = (32, 64, 128)
WARMUP_S = 1.5
# Of the bare app's GET, by worker count: one worker is the per-core figure; with two the
# bare app is bound by the load generator on 2 cores, so its ratio flatters kvbox.
TARGETS = {1: (0.55, 0.30), 2: (0.50, 0.25)}


def tune_connections(report: Report, bare_url: str, *, seconds: float, reps: int = 2) -> int:
    """The connection count (of SWEEP) with the best median baseline throughput."""
    script = get_script(None)
    runs: dict[int, list[float]] = {c: [] for c in SWEEP}
    for _ in range(reps):
        for c in SWEEP:
            runs[c].append(run_wrk(bare_url, script, seconds=seconds, connections=c).rps)
    best = max(SWEEP, key=lambda c: statistics.median(runs[c]))
    summary = ", ".join(f"{c}: {statistics.median(r):,.0f}" for c, r in runs.items())
    report.info("wrk tuning", f"bare GET req/s by connections ({reps} x {seconds:.0f} s each)",
                f"{summary} → using {best}")  # fmt: skip
    return best


def run_http(
    report: Report, *, workers: int, seconds: float, rounds: int, connections: int | None, workdir: Path,
    logs: Path, pinned: bool = False,
) -> int:  # fmt: skip
    """Measure one worker count; returns the connection count used (tuned when None). `pinned`
    (one worker): each server on one CPU, wrk on the others (see bench/cpus.py)."""
    section = f"1 KiB records, {workers} worker{'s' if workers > 1 else ''}"
    if pinned:
        section += " on one CPU (servers pinned, wrk on the other CPUs)"
        pin_one_core()
    try:
        return _measure(report, section, workers=workers, seconds=seconds, rounds=rounds, connections=connections,
                        workdir=workdir, logs=logs)  # fmt: skip
    finally:
        unpin()


def _measure(
    report: Report, section: str, *, workers: int, seconds: float, rounds: int, connections: int | None,
    workdir: Path, logs: Path,
) -> int:  # fmt: skip
    with start_bare(workers, logs) as bare, start_kvbox(workdir / f"http-w{workers}", workers, logs) as kv:
        store_id = create_store(kv, "bench")
        record_url = f"{kv.url}/v2/key-value-stores/{store_id}/records/{RECORD_KEY}"
        headers = {**auth_headers(), "Content-Type": "application/octet-stream"}
        httpx.put(record_url, content=b"x" * SIZE, headers=headers, timeout=10).raise_for_status()
        check = httpx.get(record_url, headers=auth_headers(), timeout=10)
        if check.status_code != 200 or len(check.content) != SIZE:
            raise RuntimeError(f"GET of the 1 KiB record returned {check.status_code}, {len(check.content)} bytes")

        if connections is None:
            connections = tune_connections(report, bare.url + "/", seconds=max(2.0, seconds / 2))
        runs: dict[str, Callable[[float], WrkResult]] = {
            "bare GET": lambda s: run_wrk(bare.url + "/", get_script(None), seconds=s, connections=connections),
            "kvbox GET": lambda s: run_wrk(record_url, get_script(BENCH_TOKEN), seconds=s, connections=connections),
            "kvbox PUT": lambda s: run_wrk(
                kv.url, put_script(BENCH_TOKEN, f"/v2/key-value-stores/{store_id}/records/put-", size=SIZE),
                seconds=s, connections=connections,
            ),
        }  # fmt: skip
        for run in runs.values():
            run(WARMUP_S)
        results: dict[str, list[WrkResult]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, run in runs.items():
                results[name].append(run(seconds))

    for name, rs in results.items():
        if any(r.errors for r in rs):
            report.error(section, f"{name}: {sum(r.errors for r in rs)} failed requests (non-2xx, timeouts)")
    _rows(report, section, results, connections, seconds, rounds, TARGETS.get(workers, TARGETS[2]))
    return connections


def _rows(
    report: Report, section: str, results: dict[str, list[WrkResult]], connections: int, seconds: float,
    rounds: int, targets: tuple[float, float],
) -> None:  # fmt: skip
    bare = results["bare GET"]
    base_rps = statistics.median(r.rps for r in bare)
    report.info(section, "bare app GET (baseline)", _throughput(bare))
    for name, target in zip(("kvbox GET", "kvbox PUT"), targets, strict=True):
        rs = results[name]
        ratio = statistics.median(r.rps / b.rps for r, b in zip(rs, bare, strict=True))
        report.check(
            section, f"{name} req/s", _throughput(rs), baseline=f"{base_rps:,.0f} req/s (bare GET)",
            ratio=f"{ratio:.2f}", target=f"≥ {target:.2f}", passed=ratio >= target,
            valid=not any(r.errors for r in rs + bare),
        )  # fmt: skip
        report.info(section, f"{name} latency", _latency(rs), baseline=_latency(bare))
    report.note(
        f"{section}: wrk, 2 threads, {connections} connections, {rounds} round(s) of {seconds:.0f} s per figure "
        f"after a {WARMUP_S:.1f} s warm-up; values are medians over rounds, ratio = median of per-round "
        "ratios. Latency is wrk's (no coordinated-omission correction). kvbox GET reads one 1 KiB record "
        "with `Authorization: Bearer`; PUT cycles through 1000 keys with 1 KiB bodies. wrk, the server "
        "workers and the bench share the machine's cores, for the baseline and kvbox alike, unless the section "
        "says the servers are pinned to one CPU."
    )


def _throughput(rs: list[WrkResult]) -> str:
    med = statistics.median(r.rps for r in rs)
    spread = f" (range {min(r.rps for r in rs):,.0f}-{max(r.rps for r in rs):,.0f})" if len(rs) > 1 else ""
    return f"{med:,.0f} req/s{spread}"


def _latency(rs: list[WrkResult]) -> str:
    p50 = statistics.median(r.p50_ms for r in rs)
    p99 = statistics.median(r.p99_ms for r in rs)
    return f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
