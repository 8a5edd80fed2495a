"""What metrics and access logs cost on record GET and PUT: `python -m bench.observability`.

Two servers of this checkout serve side by side, one with metrics and the JSON access log on
(as by default; the log goes to a file), one with both off (`KVBOX_METRICS=false`,
`KVBOX_ACCESS_LOG=false`), and are loaded in alternating rounds next to the bare ASGI app, so
that drift in the machine's load falls on both alike. Prints req/s of each, the ratio on/off
(the median of per-round ratios), and the server CPU time per request of each (the CPU time
of the server's processes over a run, from /proc, divided by the requests served): on a
machine shared with other work, throughput swings with the neighbours' load, while the CPU
a request costs barely does. The target: metrics and logs add less than 5% to that cost.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from bench.compare import measure_rounds
from bench.cpus import add_pin_option, pin_if_asked
from bench.servers import start_bare, start_kvbox
from bench.wrk import require_wrk

ROOT = Path(__file__).resolve().parent.parent
OFF = {"KVBOX_METRICS": "false", "KVBOX_ACCESS_LOG": "false"}
ON = {"KVBOX_METRICS": "true", "KVBOX_ACCESS_LOG": "true", "KVBOX_LOG_FORMAT": "json"}


def measure(*, workers: int, rounds: int, seconds: float, connections: int) -> dict[str, list[tuple[float, float]]]:
    """(req/s, server CPU microseconds per request) of every run, by name."""
    src = {"PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory(prefix="kvbox-observability-") as tmp:
        work = Path(tmp)
        with (
            start_bare(workers, work) as bare,
            start_kvbox(work / "on", workers, work, {**src, **ON}) as on,
            start_kvbox(work / "off", workers, work, {**src, **OFF}) as off,
        ):
            results = measure_rounds(bare, {"on": on, "off": off}, rounds=rounds, seconds=seconds,
                                     connections=connections)  # fmt: skip
            if "request_id" not in on.log_path.read_text(errors="replace"):
                raise RuntimeError("the server with logs on wrote no access log lines")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.observability", description=__doc__)
    p.add_argument("--workers", type=int, action="append", help="server workers (repeatable; default 1 and 2)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--connections", type=int, default=64)
    add_pin_option(p)
    args = p.parse_args(argv)
    args.workers = pin_if_asked(p, args.pin, args.workers)
    require_wrk()
    print("| workers | request | metrics + logs on | off | on / off | CPU per request on | off | on / off |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for workers in args.workers or [1, 2]:
        r = measure(workers=workers, rounds=args.rounds, seconds=args.seconds, connections=args.connections)
        for request in ("GET", "PUT"):
            on, off = r[f"on {request}"], r[f"off {request}"]
            rps = statistics.median(a[0] / b[0] for a, b in zip(on, off, strict=True))
            cpu = statistics.median(a[1] / b[1] for a, b in zip(on, off, strict=True))
            print(f"| {workers} | {request} 1 KiB | {statistics.median(x[0] for x in on):,.0f} req/s | "
                  f"{statistics.median(x[0] for x in off):,.0f} req/s | {rps:.3f} | "
                  f"{statistics.median(x[1] for x in on):.1f} µs | {statistics.median(x[1] for x in off):.1f} µs | "
                  f"{cpu:.3f} |", flush=True)  # fmt: skip
        bare = r["bare GET"]
        print(f"| {workers} | bare GET | {statistics.median(x[0] for x in bare):,.0f} req/s | | | "
              f"{statistics.median(x[1] for x in bare):.1f} µs | | |", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
