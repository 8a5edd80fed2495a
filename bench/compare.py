"""Record GET and PUT of this checkout against another commit, in one run: `python -m bench.compare REV`.

Both versions serve side by side (the other one from a git worktree under bench/.cache, its
source put first on the server's PYTHONPATH), each with a fresh data dir, and are measured
in alternating rounds so that drift in the machine's load falls on both alike. A bare ASGI
app GET is measured in the same rounds as the common baseline. Prints req/s per version and
the ratio of this checkout to REV (the median of per-round ratios), and the server CPU time
per request of each: on a machine shared with other work the throughput swings with the
neighbours' load, the CPU a request costs much less. `--scale-out` runs both as scale-out
nodes (PostgreSQL + S3, each version on a database and a bucket of its own, migrated by its
own code) instead of on the embedded backend.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

import httpx
from tests.backing_services import kvbox_migrate, scale_out_env

from bench.cpus import add_pin_option, pin_if_asked
from bench.scaleout import backing_services
from bench.servers import BENCH_TOKEN, Server, auth_headers, costed, start_bare, start_kvbox
from bench.wrk import WrkResult, get_script, put_script, require_wrk, run_wrk

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
SIZE = 1024
WARMUP_S = 1.5


def worktree(rev: str) -> Path:
    """A checkout of `rev` under bench/.cache (made once, reused while it exists)."""
    sha = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip()  # fmt: skip
    path = BENCH_DIR / ".cache" / f"rev-{sha[:12]}"
    if not (path / "src" / "kvbox").is_dir():
        subprocess.run(["git", "worktree", "add", "--detach", "--force", str(path), sha], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
    return path


def _prepare(url: str) -> tuple[str, str]:
    """Create the store and the 1 KiB record; return the record URL and the PUT path prefix."""
    store_id = create_store_at(url)
    record = f"{url}/v2/key-value-stores/{store_id}/records/bench-record"
    headers = {**auth_headers(), "Content-Type": "application/octet-stream"}
    httpx.put(record, content=b"x" * SIZE, headers=headers, timeout=10).raise_for_status()
    return record, f"/v2/key-value-stores/{store_id}/records/put-"


def create_store_at(url: str) -> str:
    r = httpx.post(f"{url}/v2/key-value-stores", params={"name": "bench"}, headers=auth_headers(), json={}, timeout=10)
    r.raise_for_status()
    return str(r.json()["data"]["id"])


def _getter(url: str, token: str | None, connections: int) -> Callable[[float], WrkResult]:
    return lambda seconds: run_wrk(url, get_script(token), seconds=seconds, connections=connections)


def _putter(url: str, path_prefix: str, connections: int) -> Callable[[float], WrkResult]:
    script = put_script(BENCH_TOKEN, path_prefix, size=SIZE)
    return lambda seconds: run_wrk(url, script, seconds=seconds, connections=connections)


def compare(
    rev: str, *, workers: int, rounds: int, seconds: float, connections: int, scale_out: bool = False
) -> dict[str, list[tuple[float, float]]]:
    """(req/s, server CPU microseconds per request) of every run, by name."""
    other = worktree(rev)
    envs = {"this": {"PYTHONPATH": str(ROOT / "src")}, "rev": {"PYTHONPATH": str(other / "src")}}
    with tempfile.TemporaryDirectory(prefix="kvbox-compare-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        if scale_out:
            pg, s3 = stack.enter_context(backing_services())
            for label, env in envs.items():
                bucket = s3.create_bucket(f"compare-{label}")
                env.update(scale_out_env(pg.create_database(label), f"s3://{bucket}/kv", s3.endpoint))
                kvbox_migrate(env)
        bare = stack.enter_context(start_bare(workers, work))
        this = stack.enter_context(start_kvbox(work / "this", workers, work, envs["this"]))
        that = stack.enter_context(start_kvbox(work / "other", workers, work, envs["rev"]))
        return measure_rounds(bare, {"this": this, "rev": that}, rounds=rounds, seconds=seconds,
                              connections=connections)  # fmt: skip


def measure_rounds(
    bare: Server, servers: dict[str, Server], *, rounds: int, seconds: float, connections: int
) -> dict[str, list[tuple[float, float]]]:
    """Record GET and PUT of each labelled server and the bare app's GET, in rounds after a
    warm-up: (req/s, server CPU microseconds per request) by run name.

    In each round the servers' GET runs follow one another, then their PUT runs, and every
    other round takes the servers in reverse order: the runs compared with one another are
    next to each other in time, and neither is always first."""
    runs = {"bare GET": costed(bare, _getter(bare.url + "/", None, connections))}
    for label, server in servers.items():
        record, put_prefix = _prepare(server.url)
        runs[f"{label} GET"] = costed(server, _getter(record, BENCH_TOKEN, connections))
        runs[f"{label} PUT"] = costed(server, _putter(server.url, put_prefix, connections))
    for run in runs.values():
        run(WARMUP_S)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    labels = list(servers)
    for n in range(rounds):
        order = labels if n % 2 == 0 else labels[::-1]
        for name in ["bare GET", *(f"{label} GET" for label in order), *(f"{label} PUT" for label in order)]:
            results[name].append(runs[name](seconds))
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__)
    p.add_argument("rev", help="the commit to compare against (any git revision)")
    p.add_argument("--workers", type=int, action="append", help="server workers (repeatable; default 1 and 2)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--scale-out", action="store_true", help="both versions as scale-out nodes (PostgreSQL + S3)")
    add_pin_option(p)
    args = p.parse_args(argv)
    args.workers = pin_if_asked(p, args.pin, args.workers)
    require_wrk()
    print(f"| workers | request | this checkout | {args.rev} | ratio | bare GET | this / bare | "
          f"CPU per request, this | {args.rev} | ratio | bare GET |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for workers in args.workers or [1, 2]:
        r = compare(args.rev, workers=workers, rounds=args.rounds, seconds=args.seconds,
                    connections=args.connections, scale_out=args.scale_out)  # fmt: skip
        bare = r["bare GET"]
        for request in ("GET", "PUT"):
            this, that = r[f"this {request}"], r[f"rev {request}"]
            ratio = statistics.median(a[0] / b[0] for a, b in zip(this, that, strict=True))
            of_bare = statistics.median(a[0] / b[0] for a, b in zip(this, bare, strict=True))
            cpu = statistics.median(a[1] / b[1] for a, b in zip(this, that, strict=True))
            print(f"| {workers} | {request} 1 KiB | {_median(this, 0):,.0f} req/s | {_median(that, 0):,.0f} req/s | "
                  f"{ratio:.3f} | {_median(bare, 0):,.0f} req/s | {of_bare:.2f} | {_median(this, 1):.0f} µs | "
                  f"{_median(that, 1):.0f} µs | {cpu:.3f} | {_median(bare, 1):.0f} µs |", flush=True)  # fmt: skip
    return 0


def _median(runs: list[tuple[float, float]], field: int) -> float:
    return statistics.median(r[field] for r in runs)


if __name__ == "__main__":
    raise SystemExit(main())
