"""The scale-out backend (PostgreSQL + S3) beside the embedded one, measured in the same run.

- 1 KiB GET and PUT under wrk: embedded (one node), scale-out with one node and with two
  nodes sharing the database and bucket (one wrk per node, run at once, throughput summed);
- one big record streamed in and out of each, with each node's peak RSS.

PostgreSQL runs from Debian's binaries and S3 is moto's server, both on 127.0.0.1, started
the way the tests start them. Standalone: `python -m bench.scaleout [--quick]`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg
from tests.backing_services import MotoServer, PostgresServer, kvbox_migrate, scale_out_env

from bench.bigfile import MIB, RSS_TARGET, Transfer, _get, _put
from bench.report import Report, fmt_ratio
from bench.servers import BENCH_TOKEN, Server, auth_headers, create_store, start_kvbox
from bench.wrk import WrkResult, get_script, put_script, run_wrk

SIZE = 1024
WARMUP_S = 1.5
# The embedded default does not fsync on commit (KVBOX_DURABLE=false); this is PostgreSQL's
# matching setting. fsync stays on, so the cluster itself survives a crash.
PG_SETTINGS = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "off", "max_connections": "200"}
SETUPS = ("embedded", "scale-out, 1 node", "scale-out, 2 nodes")
# The metadata URL of each scale-out node started here, by the node's URL.
DATABASES: dict[str, str] = {}
IDLE_WINDOW_S = 5.0
STATS_SETTLE_S = 11.0  # an idle backend publishes its counters within 10 s (PGSTAT_IDLE_INTERVAL)
ROUND_TRIP_TARGET = 1.0
NODE_TARGET = 0.40  # one node's GET and PUT, against the embedded figure


@contextmanager
def backing_services() -> Iterator[tuple[PostgresServer, MotoServer]]:
    with ExitStack() as stack:
        pg = PostgresServer(settings=PG_SETTINGS).start()
        stack.callback(pg.stop)
        s3 = MotoServer().start()
        stack.callback(s3.stop)
        yield pg, s3


def scale_out_nodes(stack: ExitStack, pg: PostgresServer, s3: MotoServer, nodes: int, workers: int,
                    workdir: Path, logs: Path, extra: dict[str, str] | None = None) -> list[Server]:  # fmt: skip
    """`kvbox migrate` on a new database and bucket, then `nodes` servers sharing them."""
    env = {**scale_out_env(pg.create_database("bench"), f"s3://{s3.create_bucket('bench')}/kv", s3.endpoint),
           **(extra or {})}  # fmt: skip
    kvbox_migrate(env)
    servers = []
    for n in range(nodes):
        servers.append(stack.enter_context(start_kvbox(workdir / f"so-{n}", workers, logs, extra_env=env)))
        DATABASES[servers[-1].url] = env["KVBOX_METADATA_URL"]
    return servers


def transactions(database_url: str) -> int:
    """Transactions committed or rolled back in the database so far. A node's record write is one
    transaction and one call of a stored function; the record reads sent together in one batch
    are one transaction; so this counts a node's round trips to the database, at most."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def round_trips_per_request(server: Server, script: tuple[str, str], *, seconds: float, connections: int) -> float:
    """PostgreSQL round trips per request of one wrk run on one node, from the database's own
    transaction counters. Backends publish them at most once a second while busy and within
    10 s once idle, hence the waits; the node's background work (counter flushes, sweeps) is
    measured over an idle window first and taken off, as are the counting queries."""
    url = DATABASES[server.url]
    time.sleep(STATS_SETTLE_S)
    settled = transactions(url)
    time.sleep(IDLE_WINDOW_S)
    before = transactions(url)
    background = (before - settled - 1) / IDLE_WINDOW_S  # per second
    started = time.monotonic()
    result = run_wrk(script[0], script[1], seconds=seconds, connections=connections)
    time.sleep(STATS_SETTLE_S)
    elapsed = time.monotonic() - started
    return (transactions(url) - before - 1 - background * elapsed) / max(1, result.requests)


def _wrk_on_all(servers: list[Server], script: Callable[[Server], tuple[str, str]], *, seconds: float,
                connections: int) -> WrkResult:  # fmt: skip
    """One wrk per node, started together; requests summed, latency of the slowest."""
    results: list[WrkResult] = []
    share = max(2, connections // len(servers))

    def one(server: Server) -> None:
        url, lua = script(server)
        results.append(run_wrk(url, lua, seconds=seconds, connections=share))

    threads = [threading.Thread(target=one, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if len(results) != len(servers):
        raise RuntimeError("a wrk run failed")
    return WrkResult(
        requests=sum(r.requests for r in results), duration_s=max(r.duration_s for r in results),
        errors=sum(r.errors for r in results), p50_ms=max(r.p50_ms for r in results),
        p90_ms=max(r.p90_ms for r in results), p99_ms=max(r.p99_ms for r in results),
        max_ms=max(r.max_ms for r in results),
    )  # fmt: skip


Script = Callable[[Server], tuple[str, str]]


def _prepare(servers: list[Server]) -> tuple[Script, Script, Script]:
    """One store with the 1 KiB record, written through the first node; GET and PUT scripts,
    and PUT with the store named by its name (`~bench`) instead of its ID."""
    store_id = create_store(servers[0], "bench")
    path = f"/v2/key-value-stores/{store_id}/records/one-kib"
    headers = {**auth_headers(), "Content-Type": "application/octet-stream"}
    httpx.put(servers[0].url + path, content=b"x" * SIZE, headers=headers, timeout=10).raise_for_status()
    for server in servers:  # every node serves it at once
        check = httpx.get(server.url + path, headers=auth_headers(), timeout=10)
        if check.status_code != 200 or len(check.content) != SIZE:
            raise RuntimeError(f"GET of the 1 KiB record on {server.url} returned {check.status_code}")

    def get(server: Server) -> tuple[str, str]:
        return server.url + path, get_script(BENCH_TOKEN)

    def put(server: Server, store: str = store_id) -> tuple[str, str]:
        # Each node cycles through its own keys, all in the one store.
        prefix = f"/v2/key-value-stores/{store}/records/put-{server.url.rsplit(':', 1)[1]}-"
        return server.url, put_script(BENCH_TOKEN, prefix, size=SIZE)

    def put_by_name(server: Server) -> tuple[str, str]:
        return put(server, "~bench")

    return get, put, put_by_name


def run_small(report: Report, *, workers: int, seconds: float, rounds: int, connections: int, workdir: Path,
              logs: Path) -> None:  # fmt: skip
    section = f"1 KiB records, embedded vs scale-out ({workers} worker{'s' if workers > 1 else ''} per node)"
    results: dict[tuple[str, str], list[WrkResult]] = {}
    trips: dict[str, float] = {}
    with backing_services() as (pg, s3), ExitStack() as stack:
        setups = {
            "embedded": [stack.enter_context(start_kvbox(workdir / "embedded-small", workers, logs))],
            "scale-out, 1 node": scale_out_nodes(stack, pg, s3, 1, workers, workdir / "one", logs),
            "scale-out, 2 nodes": scale_out_nodes(stack, pg, s3, 2, workers, workdir / "two", logs),
        }
        scripts = {name: _prepare(servers) for name, servers in setups.items()}
        for op in ("GET", "PUT"):
            for name, servers in setups.items():
                script = scripts[name][0 if op == "GET" else 1]
                _wrk_on_all(servers, script, seconds=WARMUP_S, connections=connections)
            for _ in range(rounds):  # interleaved, so drift on the shared machine hits all alike
                for name, servers in setups.items():
                    script = scripts[name][0 if op == "GET" else 1]
                    run = _wrk_on_all(servers, script, seconds=seconds, connections=connections)
                    results.setdefault((op, name), []).append(run)
            (node,) = setups["scale-out, 1 node"]
            script = scripts["scale-out, 1 node"][0 if op == "GET" else 1]
            trips[op] = round_trips_per_request(node, script(node), seconds=seconds, connections=connections)
        by_name = scripts["scale-out, 1 node"][2]
        trips["PUT by name"] = round_trips_per_request(node, by_name(node), seconds=seconds, connections=connections)
    for op in ("GET", "PUT"):
        base = results[(op, "embedded")]
        base_rps = statistics.median(r.rps for r in base)
        for name in SETUPS:
            rs = results[(op, name)]
            if any(r.errors for r in rs):
                report.error(section, f"{op} {name}: {sum(r.errors for r in rs)} failed requests")
            rps = statistics.median(r.rps for r in rs)
            p50, p99 = statistics.median(r.p50_ms for r in rs), statistics.median(r.p99_ms for r in rs)
            value = f"{rps:,.0f} req/s (p50 {p50:.2f} ms, p99 {p99:.2f} ms)"
            if name == "embedded":
                report.info(section, f"{op} {name}", value)
            elif name == "scale-out, 1 node":
                report.check(section, f"{op} {name}", value, baseline=f"{base_rps:,.0f} req/s (embedded)",
                             ratio=fmt_ratio(rps, base_rps), target=f"≥ {NODE_TARGET:.2f}",
                             passed=rps >= NODE_TARGET * base_rps)  # fmt: skip
            else:
                report.info(section, f"{op} {name}", value, baseline=f"{base_rps:,.0f} req/s (embedded)",
                            ratio=fmt_ratio(rps, base_rps))  # fmt: skip
    for op, per_request in trips.items():
        report.check(
            section, f"{op} PostgreSQL round trips per request, scale-out, 1 node", f"{per_request:.3f}",
            baseline="—", ratio="—", target=f"at most {ROUND_TRIP_TARGET:.0f} (and 5% of background work)",
            passed=per_request <= ROUND_TRIP_TARGET + 0.05,
        )  # fmt: skip
    report.note(
        f"{section}: round trips per request are the database's transactions (pg_stat_database xact_commit + "
        "xact_rollback; every statement of a node runs in autocommit) during one more wrk run on the one-node "
        "setup, divided by the requests it made, less the node's background work (counter flushes, sweeps) "
        f"at the rate measured over {IDLE_WINDOW_S:.0f} idle seconds before the run. A node sends the record "
        "queries of one event-loop turn as one batch (one round trip); the reads of a batch share a transaction, "
        "and so do its writes to one store, so a figure is the share of a batch each request makes. PUT by "
        "name addresses the store as ~bench instead of by its ID."
    )
    report.note(
        f"{section}: wrk, 2 threads, {connections} connections in all (split over the nodes), {rounds} round(s) of "
        f"{seconds:.0f} s per figure after a {WARMUP_S:.1f} s warm-up, setups interleaved; values are medians. "
        "Two nodes: one wrk per node at once, requests summed, latency of the slower node. GET reads one 1 KiB "
        "record (inline in the index); PUT cycles through 1000 keys per node in one store. PostgreSQL runs with "
        "synchronous_commit=off, the counterpart of the embedded default (no fsync per commit). Everything "
        "(wrk, nodes, PostgreSQL, moto) shares the machine's 2 cores, so two nodes here show the cost of "
        "coordination, not the gain of a second host."
    )


def run_big(report: Report, *, size: int, workers: int, workdir: Path, logs: Path) -> None:
    label = f"{size // MIB} MiB" if size < 1 << 30 else f"{size / (1 << 30):g} GiB"
    section = f"{label} record, embedded vs scale-out ({workers} worker{'s' if workers > 1 else ''})"
    extra = {"KVBOX_MAX_RECORD_SIZE": "2GiB"}
    transfers: dict[str, tuple[Transfer, Transfer]] = {}
    with backing_services() as (pg, s3), httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0)) as client:
        for name in ("embedded", "scale-out"):
            with ExitStack() as stack:
                if name == "embedded":
                    kv = stack.enter_context(start_kvbox(workdir / "embedded-big", workers, logs, extra_env=extra))
                else:
                    (kv,) = scale_out_nodes(stack, pg, s3, 1, workers, workdir / "big", logs, extra)
                url = f"{kv.url}/v2/key-value-stores/{create_store(kv, 'big')}/records/big-record"
                transfers[name] = (_put(client, kv, url, size), _get(client, kv, url, size))
                client.delete(url, headers=auth_headers()).raise_for_status()
    (e_put, e_get), (s_put, s_get) = transfers["embedded"], transfers["scale-out"]
    for op, emb, so in (("PUT", e_put, s_put), ("GET", e_get, s_get)):
        speed, base = so.mibps(size), emb.mibps(size)
        report.info(section, f"{op} throughput, scale-out", f"{speed:,.0f} MiB/s",
                    baseline=f"{base:,.0f} MiB/s (embedded)", ratio=fmt_ratio(speed, base))  # fmt: skip
        for name, t in (("embedded", emb), ("scale-out", so)):
            report.check(
                section, f"node peak RSS during {op}, {name} (main + workers)", f"{t.peak_rss / MIB:.0f} MiB",
                baseline=f"idle {t.idle_rss / MIB:.0f} MiB; PSS {t.peak_pss / MIB:.0f} MiB", ratio="—",
                target=f"< {RSS_TARGET / MIB:.0f} MiB", passed=t.peak_rss < RSS_TARGET,
            )  # fmt: skip
    report.note(
        f"{section}: one node per backend, httpx streaming upload (1 MiB chunks, Content-Length set) and "
        "streaming download, as in the embedded big-record bench; the scale-out node sends the body to S3 as a "
        "multipart upload (5 MiB parts, one in flight while the next fills) and streams it back with one GET. "
        "moto (the S3 server, in Python) bounds the scale-out figures; real S3 or MinIO are faster."
    )


def run_scaleout(report: Report, *, quick: bool, workers: int, workdir: Path, logs: Path) -> None:
    """Both parts, sized for `make bench` (full) or a smoke run (quick)."""
    run_small(report, workers=workers, seconds=3 if quick else 5, rounds=1 if quick else 3, connections=32,
              workdir=workdir, logs=logs)  # fmt: skip
    run_big(report, size=(256 if quick else 1024) * MIB, workers=workers, workdir=workdir, logs=logs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__)
    p.add_argument("--quick", action="store_true", help="3 s wrk runs, one round, a 256 MiB record")
    p.add_argument("--workers", type=int, default=1, help="server worker processes per node (default 1)")
    args = p.parse_args(argv)
    import os
    import shutil

    cache = Path(__file__).resolve().parent / ".cache"
    workdir, logs = cache / f"scaleout-{os.getpid()}", cache / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    report = Report(mode="quick" if args.quick else "full")
    started = time.monotonic()
    try:
        run_scaleout(report, quick=args.quick, workers=args.workers, workdir=workdir, logs=logs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(report.markdown())
    print(f"took {time.monotonic() - started:.0f} s; server logs in {logs}")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
