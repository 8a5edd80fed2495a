"""Conditional writes: compare-and-set increments on one hot key, and what `If-Match` costs a PUT.

- CAS: writers each read the counter with its ETag and write it back + 1 with `If-Match`,
  reading again on `412` after the SDK's jittered backoff, for a fixed time, on one and on
  two workers; one writer alone (what a condition costs) and eight at once (contention). The
  baseline is the same loop without `If-Match` (a plain read-modify-write, which loses
  increments when writers race) in the same run; the bench also checks that no
  compare-and-set increment was lost.
- `If-Match: *` PUT against a plain PUT of the same 1 KiB records under wrk, on the embedded
  backend and on one scale-out node (the index checks the condition in the write's own
  transaction, so the target is within 10%).

Standalone: `python -m bench.cas [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.report import Report, fmt_ratio
from bench.scaleout import backing_services, scale_out_nodes
from bench.servers import BENCH_TOKEN, Server, auth_headers, create_store, start_kvbox
from bench.wrk import WrkResult, put_script, run_wrk

WRITERS = (1, 8)
WARMUP_S = 1.0
IF_MATCH_TARGET = 0.90
PUT_KEYS = 1000


@dataclass(frozen=True)
class Increments:
    done: int  # writes that went through
    conflicts: int  # 412 answers (compare-and-set only)
    seconds: float
    gained: int  # how much the counter grew: `done` unless increments were lost

    @property
    def per_second(self) -> float:
        return self.done / self.seconds


def _backoff(attempt: int) -> float:
    """Seconds before trying again after a conflict: kvbox.sdk's `update_value` waits as much."""
    return random.uniform(0, min(0.2, 0.002 * 2**attempt))


async def _increments(url: str, *, cas: bool, writers: int, seconds: float) -> Increments:
    """`writers` loops, each on its own connection, for `seconds`."""
    headers = {**auth_headers(), "Content-Type": "text/plain"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as setup:
        start = int((await setup.get(url)).text)
    done, conflicts = [0] * writers, [0] * writers
    deadline = time.monotonic() + seconds

    async def writer(w: int) -> None:
        async with httpx.AsyncClient(headers=headers, timeout=30) as client:
            attempt = 0
            while time.monotonic() < deadline:
                read = await client.get(url)
                conditions = {"If-Match": read.headers["etag"]} if cas else {}
                r = await client.put(url, content=str(int(read.text) + 1).encode(), headers=conditions)
                if r.status_code == 412:
                    conflicts[w] += 1
                    await asyncio.sleep(_backoff(attempt))
                    attempt += 1
                elif r.status_code != 201:
                    raise RuntimeError(f"PUT answered {r.status_code}: {r.text[:200]}")
                else:
                    done[w] += 1
                    attempt = 0

    t = time.perf_counter()
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - t
    async with httpx.AsyncClient(headers=headers, timeout=30) as check:
        end = int((await check.get(url)).text)
    return Increments(sum(done), sum(conflicts), elapsed, end - start)


def run_cas(report: Report, *, workers: int, seconds: float, rounds: int, workdir: Path, logs: Path) -> None:
    section = f"compare-and-set on one hot key, {workers} worker{'s' if workers > 1 else ''}"
    runs: dict[tuple[int, bool], list[Increments]] = {}
    with start_kvbox(workdir / f"cas-w{workers}", workers, logs) as kv:
        url = f"{kv.url}/v2/key-value-stores/{create_store(kv, 'cas')}/records/counter"
        httpx.put(url, content=b"0", headers=auth_headers(), timeout=10).raise_for_status()
        asyncio.run(_increments(url, cas=True, writers=max(WRITERS), seconds=WARMUP_S))
        for _ in range(rounds):  # interleaved, so drift on the shared machine hits all alike
            for writers in WRITERS:
                for cas in (True, False):
                    found = asyncio.run(_increments(url, cas=cas, writers=writers, seconds=seconds))
                    runs.setdefault((writers, cas), []).append(found)
    for writers in WRITERS:
        _cas_rows(report, section, writers, runs[writers, True], runs[writers, False])
    report.note(
        f"{section}: {' and '.join(map(str, WRITERS))} async httpx writers, each on its own connection, {rounds} "
        f"round(s) of {seconds:.0f} s per figure (all loops interleaved); one increment is a GET and a PUT of a "
        "text counter; after a 412 a writer waits as kvbox.sdk's update_value does. Racing writers cannot beat "
        "one success per read-write round trip of the key, whatever the server: the 8-writer ratio shows "
        "contention, the 1-writer ratio the cost of the condition. The load generator is Python on the same "
        "2 cores, for all loops alike."
    )


def _cas_rows(report: Report, section: str, writers: int, cas: list[Increments], plain: list[Increments]) -> None:
    who = "1 writer" if writers == 1 else f"{writers} writers"
    rate = statistics.median(r.per_second for r in cas)
    base = statistics.median(r.per_second for r in plain)
    report.info(section, f"{who}: compare-and-set increments/s", f"{rate:,.0f}/s",
                baseline=f"{base:,.0f}/s (plain read-modify-write)", ratio=fmt_ratio(rate, base))  # fmt: skip
    tries = sum(r.done + r.conflicts for r in cas)
    lost = sum(r.done - r.gained for r in cas)
    plain_lost = sum(r.done - r.gained for r in plain) / max(1, sum(r.done for r in plain))
    refused = sum(r.conflicts for r in cas) / tries
    report.check(
        section, f"{who}: compare-and-set increments lost", str(lost),
        baseline=f"plain loop lost {plain_lost:.0%}; CAS attempts refused {refused:.0%}",
        ratio="—", target="0", passed=lost == 0,
    )  # fmt: skip


def _if_match_runs(servers: dict[str, Server], *, seconds: float, rounds: int, connections: int
                   ) -> dict[tuple[str, bool], list[WrkResult]]:  # fmt: skip
    results: dict[tuple[str, bool], list[WrkResult]] = {}
    scripts: dict[tuple[str, bool], tuple[str, str]] = {}
    for name, server in servers.items():
        prefix = f"/v2/key-value-stores/{create_store(server, 'if-match')}/records/put-"
        plain = put_script(BENCH_TOKEN, prefix, keys=PUT_KEYS)
        scripts[name, False] = server.url, plain
        scripts[name, True] = server.url, put_script(BENCH_TOKEN, prefix, keys=PUT_KEYS, headers={"If-Match": "*"})
        # Every key written once, so `If-Match: *` (the record must exist) holds for all.
        with httpx.Client(base_url=server.url, headers=auth_headers(), timeout=10) as client:
            for k in range(1, PUT_KEYS + 1):
                client.put(f"{prefix}{k:05d}", content=b"x" * 1024).raise_for_status()
    for url, script in scripts.values():
        run_wrk(url, script, seconds=WARMUP_S, connections=connections)
    for _ in range(rounds):
        for key, (url, script) in scripts.items():
            results.setdefault(key, []).append(run_wrk(url, script, seconds=seconds, connections=connections))
    return results


def run_if_match(report: Report, *, workers: int, seconds: float, rounds: int, connections: int, workdir: Path,
                 logs: Path) -> None:  # fmt: skip
    section = f"If-Match PUT vs plain PUT, 1 KiB ({workers} worker{'s' if workers > 1 else ''} per node)"
    with backing_services() as (pg, s3), ExitStack() as stack:
        servers = {
            "embedded": stack.enter_context(start_kvbox(workdir / "if-match", workers, logs)),
            "scale-out": scale_out_nodes(stack, pg, s3, 1, workers, workdir / "if-match-so", logs)[0],
        }
        results = _if_match_runs(servers, seconds=seconds, rounds=rounds, connections=connections)
    for name in servers:
        plain, conditional = results[name, False], results[name, True]
        errors = sum(r.errors for r in plain + conditional)
        if errors:
            report.error(section, f"{name}: {errors} failed requests (non-2xx, timeouts)")
        base = statistics.median(r.rps for r in plain)
        rps = statistics.median(r.rps for r in conditional)
        ratio = statistics.median(c.rps / p.rps for c, p in zip(conditional, plain, strict=True))
        report.check(
            section, f"{name}: If-Match PUT req/s", f"{rps:,.0f} req/s (p99 "
            f"{statistics.median(r.p99_ms for r in conditional):.2f} ms)", baseline=f"{base:,.0f} req/s (plain PUT)",
            ratio=f"{ratio:.2f}", target=f"≥ {IF_MATCH_TARGET:.2f}", passed=ratio >= IF_MATCH_TARGET,
            valid=errors == 0,
        )  # fmt: skip
    report.note(
        f"{section}: wrk, 2 threads, {connections} connections, {rounds} round(s) of {seconds:.0f} s per figure, "
        f"plain and conditional interleaved; both cycle through the same {PUT_KEYS} existing keys, the "
        "conditional one with `If-Match: *`, which the index checks in the write's own transaction. Ratio = "
        "median of per-round ratios."
    )


def run_conditional_writes(report: Report, *, quick: bool, workers: int, workdir: Path, logs: Path) -> None:
    seconds, rounds = (3.0, 1) if quick else (5.0, 3)
    for n in (1, 2):
        run_cas(report, workers=n, seconds=seconds, rounds=rounds, workdir=workdir, logs=logs)
    run_if_match(report, workers=workers, seconds=seconds, rounds=rounds, connections=32, workdir=workdir, logs=logs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.cas", description=__doc__)
    p.add_argument("--quick", action="store_true", help="3 s runs, one round")
    p.add_argument("--workers", type=int, default=2, help="server workers for the If-Match PUT figures")
    args = p.parse_args(argv)
    import os
    import shutil

    cache = Path(__file__).resolve().parent / ".cache"
    workdir, logs = cache / f"cas-{os.getpid()}", cache / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    report = Report(mode="quick" if args.quick else "full")
    try:
        run_conditional_writes(report, quick=args.quick, workers=args.workers, workdir=workdir, logs=logs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.markdown())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
