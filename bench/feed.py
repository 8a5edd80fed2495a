"""The change feed: how soon a consumer hears of a write, and what the feed costs a PUT.

- Latency: a writer PUTs one small record every 20 ms into a store with a loopback webhook
  and, at the same time, a long-poll consumer (`GET .../changes?wait=30`) and a Server-Sent
  Events consumer follow the store. For each write, the time from the writer receiving the
  PUT's acknowledgement to each consumer receiving the change (all clocks are this
  process's monotonic clock): p50 and p99.
- Throughput: PUT of 1 KiB records under wrk on a server logging changes (the default)
  against the same server with `KVBOX_CHANGES=false`, rounds interleaved, in the same run.

Embedded backend, `kvbox serve --workers N`. Servers listen on 127.0.0.1 only.
Standalone: `python -m bench.feed [--quick]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench.report import Report
from bench.servers import BENCH_TOKEN, auth_headers, create_store, start_kvbox
from bench.wrk import put_script, run_wrk

THROUGHPUT_TARGET = 0.90
WRITE_EVERY_S = 0.02
SETTLE_S = 2.0
FEED_ENV = {"KVBOX_WEBHOOK_ALLOW_PRIVATE": "true"}


class _Arrivals:
    """When each consumer received each key (monotonic seconds)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.at: dict[str, dict[str, float]] = {"long-poll": {}, "SSE": {}, "webhook": {}}

    def saw(self, consumer: str, key: str) -> None:
        now = time.monotonic()
        with self.lock:
            self.at[consumer].setdefault(key, now)


def _receiver(arrivals: _Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            arrivals.saw("webhook", json.loads(body)["eventData"]["key"])
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


async def _long_poll(url: str, arrivals: _Arrivals, stop: asyncio.Event) -> None:
    after = 0
    async with httpx.AsyncClient(headers=auth_headers(), timeout=60) as client:
        while not stop.is_set():
            r = await client.get(url, params={"after": after, "wait": 30})
            data = r.json()["data"]
            for change in data["items"]:
                arrivals.saw("long-poll", change["key"])
            after = data["lastSequence"]


async def _sse(url: str, arrivals: _Arrivals, stop: asyncio.Event) -> None:
    headers = {**auth_headers(), "Accept": "text/event-stream"}
    async with httpx.AsyncClient(headers=headers, timeout=60) as client, client.stream("GET", url) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                arrivals.saw("SSE", json.loads(line[6:])["key"])
            if stop.is_set():
                return


async def _latencies(base: str, store: str, writes: int) -> dict[str, list[float]]:
    arrivals = _Arrivals()
    httpd = _receiver(arrivals)
    hook_url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    changes = f"{base}/v2/key-value-stores/{store}/changes"
    acked: dict[str, float] = {}
    stop = asyncio.Event()
    try:
        async with httpx.AsyncClient(headers=auth_headers(), timeout=30) as client:
            r = await client.post(f"{base}/v2/key-value-stores/{store}/webhooks", json={"requestUrl": hook_url})
            r.raise_for_status()
            consumers = [asyncio.ensure_future(_long_poll(changes, arrivals, stop)),
                         asyncio.ensure_future(_sse(changes, arrivals, stop))]  # fmt: skip
            await asyncio.sleep(1.0)  # both consumers are waiting
            for i in range(writes):
                key = f"k{i:05d}"
                r = await client.put(f"{base}/v2/key-value-stores/{store}/records/{key}", content=b"x" * 64)
                acked[key] = time.monotonic()
                r.raise_for_status()
                await asyncio.sleep(WRITE_EVERY_S)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and any(len(a) < writes for a in arrivals.at.values()):
                await asyncio.sleep(0.1)
            await asyncio.sleep(SETTLE_S)
            stop.set()
            for task in consumers:
                task.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)
    finally:
        httpd.shutdown()
        httpd.server_close()
    return {name: [(seen[k] - acked[k]) * 1000 for k in acked if k in seen] for name, seen in arrivals.at.items()}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_latency(report: Report, *, writes: int, workers: int, workdir: Path, logs: Path) -> None:
    section = f"change feed latency ({workers} workers)"
    with start_kvbox(workdir / "feed-latency", workers, logs, extra_env=FEED_ENV) as server:
        store = create_store(server, "feed-latency")
        results = asyncio.run(_latencies(server.url, store, writes))
    for consumer, ms in results.items():
        missing = writes - len(ms)
        report.check(
            section, f"{consumer}: write acknowledged -> change received", f"p50 {_pct(ms, 0.5):.1f} ms, "
            f"p99 {_pct(ms, 0.99):.1f} ms" if ms else "nothing received", baseline="—", ratio="—",
            target="every change, p99 < 1000 ms", passed=bool(ms) and _pct(ms, 0.99) < 1000, valid=missing == 0,
        )  # fmt: skip
    report.note(
        f"{section}: {writes} PUTs of 64 B, one every {WRITE_EVERY_S * 1000:.0f} ms, while a long-poll consumer "
        "(wait=30), an SSE consumer and a loopback webhook receiver follow the store; latency from the PUT's "
        "acknowledgement at the writer to the change's arrival at each consumer, one monotonic clock."
    )


def run_throughput(report: Report, *, workers: int, seconds: float, rounds: int, workdir: Path, logs: Path) -> None:
    section = f"PUT with the change feed on vs off, 1 KiB ({workers} workers)"
    results: dict[bool, list[Any]] = {True: [], False: []}
    with (
        start_kvbox(workdir / "feed-on", workers, logs) as on,
        start_kvbox(workdir / "feed-off", workers, logs, extra_env={"KVBOX_CHANGES": "false"}) as off,
    ):
        scripts = {}
        for feed, server in ((True, on), (False, off)):
            store = create_store(server, "feed-put")
            scripts[feed] = (server.url, put_script(BENCH_TOKEN, f"/v2/key-value-stores/{store}/records/k"))
            run_wrk(scripts[feed][0], scripts[feed][1], seconds=1, connections=32)  # warm-up, creates the keys
        for _ in range(rounds):
            for feed in (False, True):
                url, script = scripts[feed]
                results[feed].append(run_wrk(url, script, seconds=seconds, connections=32))
    errors = sum(r.errors for rs in results.values() for r in rs)
    base = statistics.median(r.rps for r in results[False])
    rps = statistics.median(r.rps for r in results[True])
    ratio = statistics.median(a.rps / b.rps for a, b in zip(results[True], results[False], strict=True))
    report.check(
        section, "PUT req/s with the feed on", f"{rps:,.0f} req/s (p99 "
        f"{statistics.median(r.p99_ms for r in results[True]):.2f} ms)", baseline=f"{base:,.0f} req/s (feed off)",
        ratio=f"{ratio:.2f}", target=f"≥ {THROUGHPUT_TARGET:.2f}", passed=ratio >= THROUGHPUT_TARGET,
        valid=errors == 0,
    )  # fmt: skip
    report.note(
        f"{section}: wrk, 2 threads, 32 connections, {rounds} round(s) of {seconds:.0f} s per figure, off and on "
        "interleaved, each cycling through the same 1000 keys of its own server (KVBOX_CHANGES=false for the "
        "baseline). Ratio = median of per-round ratios."
    )


def run_feed(report: Report, *, quick: bool, workers: int, workdir: Path, logs: Path) -> None:
    run_latency(report, writes=100 if quick else 300, workers=workers, workdir=workdir, logs=logs)
    run_throughput(report, workers=workers, seconds=3 if quick else 5, rounds=1 if quick else 3, workdir=workdir,
                   logs=logs)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.feed", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer writes, one short round")
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    args = p.parse_args(argv)
    import os
    import shutil

    cache = Path(__file__).resolve().parent / ".cache"
    workdir, logs = cache / f"feed-{os.getpid()}", cache / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    report = Report(mode="quick" if args.quick else "full")
    try:
        run_feed(report, quick=args.quick, workers=args.workers, workdir=workdir, logs=logs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.markdown())
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
