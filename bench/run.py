"""Run the benchmark suite: `python -m bench.run` (full, under ~20 min once its stores are
cached, plus the 10-minute soak) or `--quick` (a few minutes).

Every figure is printed next to a baseline measured in the same run, with its ratio and
target; the table is also written to bench/results/latest.md. Servers listen on
127.0.0.1 only, and every load loop is bounded in time and count.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.bigfile import run_bigfile
from bench.cas import run_conditional_writes
from bench.console import run_console
from bench.feed import run_feed
from bench.growth import run_growth
from bench.httpbench import run_http
from bench.lifecycle import run_delete_prefix, run_sweep
from bench.listing import run_listing
from bench.listing_fields import run_listing_fields
from bench.ranges import run_ranges
from bench.report import Report
from bench.scaleout import run_scaleout
from bench.soak import run_soak
from bench.wrk import require_wrk

BENCH_DIR = Path(__file__).resolve().parent
CACHE = BENCH_DIR / ".cache"
RESULTS = BENCH_DIR / "results" / "latest.md"
SECTIONS = (
    "http", "observability", "list", "big", "console", "sdk", "scaleout", "conditional", "lifecycle", "feed",
    "growth", "soak",
)  # fmt: skip


@dataclass(frozen=True)
class Plan:
    mode: str
    wrk_seconds: float
    rounds: int
    connections: int | None  # None: tune on the baseline
    one_worker: bool
    keys: int
    list_samples: int
    big_size: int
    big_reps: int
    soak_seconds: float
    soak_kills: int
    expiry_window_s: float  # records of the sweep run expire over this long
    delete_keys: int
    growth_keys: int


FULL = Plan("full", 6, 3, None, True, 1_000_000, 100, 1 << 30, 2, 600, 3, 60.0, 100_000, 10_000_000)
QUICK = Plan("quick", 3, 1, 64, False, 100_000, 30, 256 << 20, 1, 40, 1, 20.0, 20_000, 100_000)
WRITER_RATE = 200.0  # PUT/s of the writer running beside the lifecycle work
CONSOLE_STORES = 10_000


def _scripts(report: Report, *modules: str) -> None:
    for module in modules:
        _script(report, module)


def _script(report: Report, module: str, *args: str) -> None:
    """Benchmarks that print their own table (the SDK's, metrics and logs): run them and keep their output."""
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=900,
                          check=False)  # fmt: skip
    print(done.stdout, flush=True)
    if done.returncode != 0:
        report.error(module, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed")
    report.note(f"`python -m {' '.join((module, *args))}`:\n\n```\n{done.stdout.strip()}\n```")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--quick", action="store_true", help="short run: 3 s wrk runs, 100k keys, 256 MiB record")
    p.add_argument("--only", action="append", choices=SECTIONS, help="run only this section (repeatable)")
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    p.add_argument("--connections", type=int, help="wrk connections (default: tuned on the baseline)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    sections = args.only or list(SECTIONS)
    if "http" in sections:
        require_wrk()
    report = Report(mode=plan.mode)
    workdir = CACHE / f"work-{os.getpid()}"
    logs = CACHE / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Callable[[], None]] = {
        "http": lambda: _http(report, plan, args, workdir, logs),
        "list": lambda: run_listing(
            report, cache_root=CACHE, keys=plan.keys, workers=args.workers, samples=plan.list_samples, logs=logs
        ),
        "big": lambda: run_bigfile(
            report, size=plan.big_size, workers=args.workers, workdir=workdir, logs=logs, reps=plan.big_reps
        ),
        "console": lambda: run_console(
            report, stores=CONSOLE_STORES, records=plan.keys, samples=20 if plan.mode == "full" else 8
        ),
        "observability": lambda: _observability(report, plan),
        "sdk": lambda: _scripts(report, "bench.sdk_local", "bench.sdk_remote"),
        "scaleout": lambda: run_scaleout(report, quick=plan.mode == "quick", workers=1, workdir=workdir, logs=logs),
        "conditional": lambda: _conditional(report, plan, args, workdir, logs),
        "lifecycle": lambda: _lifecycle(report, plan, args, workdir, logs),
        "feed": lambda: run_feed(report, quick=plan.mode == "quick", workers=args.workers, workdir=workdir, logs=logs),
        "growth": lambda: run_growth(
            report,
            cache_root=CACHE,
            keys=plan.growth_keys,
            workers=1,
            seconds=plan.wrk_seconds,
            rounds=plan.rounds,
            samples=plan.list_samples,
            logs=logs,
        ),
        "soak": lambda: run_soak(
            report, seconds=plan.soak_seconds, kills=plan.soak_kills, workers=args.workers, workdir=workdir, logs=logs
        ),
    }
    try:
        for name in sections:
            started = time.monotonic()
            print(f"== {name} ({plan.mode})", flush=True)
            try:
                steps[name]()
            except Exception as exc:  # one failed section must not hide the others' figures
                traceback.print_exc()
                report.error(name, f"{type(exc).__name__}: {exc}")
            print(f"   {name} took {time.monotonic() - started:.0f} s", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report.write(RESULTS)
    print()
    print(report.markdown())
    print(f"written to {RESULTS.relative_to(BENCH_DIR.parent)}; server logs in {logs.relative_to(BENCH_DIR.parent)}")
    return 1 if report.failed else 0


def _conditional(report: Report, plan: Plan, args: argparse.Namespace, workdir: Path, logs: Path) -> None:
    """Compare-and-set and If-Match PUT (bench/cas.py), then range reads of a big record (bench/ranges.py)."""
    quick = plan.mode == "quick"
    run_conditional_writes(report, quick=quick, workers=args.workers, workdir=workdir, logs=logs)
    run_ranges(report, size=plan.big_size, workers=args.workers, samples=20 if quick else 30, workdir=workdir,
               logs=logs)  # fmt: skip


# Rounds of the observability comparison in a full run: its on/off ratio moved by up to 0.13
# between runs of 3 rounds on the same code, more than the 0.05 it is to resolve.
OBSERVABILITY_ROUNDS = 7


def _observability(report: Report, plan: Plan) -> None:
    """Metrics and logs on against off: as the workers share the cores, then per core."""
    rounds = OBSERVABILITY_ROUNDS if plan.mode == "full" else max(3, plan.rounds)
    for pin in ((), ("--pin",)):
        _script(report, "bench.observability", "--rounds", str(rounds), "--seconds", str(plan.wrk_seconds),
                *pin)  # fmt: skip


def _http(report: Report, plan: Plan, args: argparse.Namespace, workdir: Path, logs: Path) -> None:
    connections = args.connections or plan.connections
    connections = run_http(
        report, workers=args.workers, seconds=plan.wrk_seconds, rounds=plan.rounds, connections=connections,
        workdir=workdir, logs=logs,
    )  # fmt: skip
    if plan.one_worker and args.workers != 1:
        run_http(
            report, workers=1, seconds=plan.wrk_seconds, rounds=plan.rounds, connections=connections,
            workdir=workdir, logs=logs,
        )  # fmt: skip
    if plan.one_worker:  # the per-core figure
        run_http(
            report, workers=1, seconds=plan.wrk_seconds, rounds=plan.rounds, connections=connections,
            workdir=workdir, logs=logs, pinned=True,
        )  # fmt: skip


def _lifecycle(report: Report, plan: Plan, args: argparse.Namespace, workdir: Path, logs: Path) -> None:
    run_sweep(report, cache_root=CACHE, keys=plan.keys, window_s=plan.expiry_window_s, workers=args.workers,
              rate=WRITER_RATE, workdir=workdir, logs=logs)  # fmt: skip
    run_delete_prefix(report, cache_root=CACHE, keys=plan.delete_keys, workers=args.workers, rate=WRITER_RATE,
                      workdir=workdir, logs=logs)  # fmt: skip
    run_listing_fields(report, cache_root=CACHE, keys=plan.keys, workers=args.workers, samples=plan.list_samples,
                       rounds=3, logs=logs)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
