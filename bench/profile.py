"""Where a kvbox worker spends its time under one benchmark load, sampled with py-spy.

    python -m bench.profile get|put|list [--workers 2] [--seconds 8] [--idle] [--native]

Starts `kvbox serve` on 127.0.0.1, drives the load (wrk for get/put; sequential key pages
of the cached big store for list), records every worker with `py-spy record --format raw`
and prints the hottest frames: by own time, and by time including callees for kvbox code.
py-spy is on PyPI (`pip install py-spy`); it needs ptrace rights (root, or CAP_SYS_PTRACE).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.listing import PAGE, ensure_populated, key_at
from bench.servers import BENCH_TOKEN, Server, auth_headers, create_store, start_kvbox, tree_pids
from bench.wrk import get_script, put_script, run_wrk

CACHE = Path(__file__).resolve().parent / ".cache"
RATE = 250  # samples per second per worker


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("load", choices=("get", "put", "list"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--scale-out", action="store_true", help="profile a scale-out node (PostgreSQL + S3), get/put only")
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--keys", type=int, default=1_000_000, help="store size for `list` (cached like bench.run)")
    p.add_argument("--idle", action="store_true", help="also count samples of waiting threads (lock waits)")
    p.add_argument("--native", action="store_true", help="include C frames (sqlite3, granian)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", type=Path, help="keep py-spy's raw (collapsed) stacks in this directory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        raise SystemExit("py-spy is not installed: pip install py-spy")
    workdir = CACHE / "work-profile"
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        pop = ensure_populated(CACHE, args.keys) if args.load == "list" else None
        data_dir = pop.data_dir if pop else workdir / "data"
        with ExitStack() as stack:
            if args.scale_out:
                from bench.scaleout import backing_services, scale_out_nodes

                pg, s3 = stack.enter_context(backing_services())
                (server,) = scale_out_nodes(stack, pg, s3, 1, args.workers, workdir, workdir / "logs")
            else:
                server = stack.enter_context(start_kvbox(data_dir, args.workers, workdir / "logs"))
            if pop:
                load = _list_load(server, pop.store_id, args.keys, args.seconds + 1)
            else:
                load = _wrk_load(server, args.load, args.seconds + 1, args.connections)
            raws = _record(spy, server, args, load)
        _summarise(raws, args.top)
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            for raw in raws:
                shutil.copy(raw, args.out / f"{args.load}-{raw.name}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


def _wrk_load(server: Server, kind: str, seconds: float, connections: int) -> threading.Thread:
    store_id = create_store(server, "bench")
    base = f"{server.url}/v2/key-value-stores/{store_id}/records/"
    headers = {**auth_headers(), "Content-Type": "application/octet-stream"}
    httpx.put(base + "one-kib", content=b"x" * 1024, headers=headers, timeout=10).raise_for_status()
    if kind == "get":
        url, script = base + "one-kib", get_script(BENCH_TOKEN)
    else:
        url, script = server.url, put_script(BENCH_TOKEN, f"/v2/key-value-stores/{store_id}/records/put-")
    run_wrk(url, script, seconds=1.5, connections=connections)  # warm-up

    def drive() -> None:
        r = run_wrk(url, script, seconds=seconds, connections=connections)
        print(f"load: {r.rps:,.0f} req/s, p50 {r.p50_ms:.2f} ms, p99 {r.p99_ms:.2f} ms, errors {r.errors}")

    return threading.Thread(target=drive)


def _list_load(server: Server, store_id: str, keys: int, seconds: float) -> threading.Thread:
    url = f"{server.url}/v2/key-value-stores/{store_id}/keys"
    params = {"limit": str(PAGE), "exclusiveStartKey": key_at(keys // 2)}

    def drive() -> None:
        times: list[float] = []
        deadline = time.monotonic() + seconds
        with httpx.Client(headers=auth_headers(), timeout=30) as client:
            while time.monotonic() < deadline and len(times) < 100_000:
                t = time.perf_counter()
                client.get(url, params=params).raise_for_status()
                times.append((time.perf_counter() - t) * 1000)
        times.sort()
        print(f"load: {len(times)} pages, p50 {times[len(times) // 2]:.2f} ms")

    return threading.Thread(target=drive)


def _record(spy: str, server: Server, args: argparse.Namespace, load: threading.Thread) -> list[Path]:
    workers = tree_pids(server.proc.pid)[1:]
    raws = [server.log_path.parent / f"profile-{pid}.txt" for pid in workers]
    flags = ["-r", str(RATE), "-d", str(round(args.seconds)), "-f", "raw"]
    # Native stacks need py-spy to pause the worker for each sample, which slows it down.
    flags += ["--idle"] * args.idle + (["--native"] if args.native else ["--nonblocking"])
    spies = [
        subprocess.Popen(
            [spy, "record", "-p", str(pid), *flags, "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        for pid, raw in zip(workers, raws, strict=True)
    ]
    time.sleep(0.5)  # let py-spy attach before the load starts
    load.start()
    for p in spies:
        p.wait(timeout=args.seconds + 60)
    load.join(timeout=args.seconds + 60)
    return [r for r in raws if r.exists()]


def _summarise(raws: list[Path], top: int) -> None:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for raw in raws:
        for line in raw.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            frames = [f for f in stack.split(";") if f]
            if not frames:
                continue  # a thread with no Python frame (granian's runtime threads)
            n = int(count)
            total += n
            own[frames[-1]] += n
            for f in set(frames):
                incl[f] += n
    if not total:
        print("no samples (does py-spy have ptrace rights?)")
        return
    print(f"\n{total} samples with a Python stack over {len(raws)} worker(s)\n\nhottest frames, own time:")
    for frame, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {frame}")
    print("\nkvbox frames, including callees:")
    kvbox = [(f, n) for f, n in incl.most_common() if "kvbox/" in f and "kvbox/cli/" not in f]
    for frame, n in kvbox[:top]:
        print(f"  {100 * n / total:5.1f}%  {frame}")


if __name__ == "__main__":
    sys.exit(main())
