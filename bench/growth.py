"""Growth: an embedded store of 10,000,000 records beside one of 1,000, measured in the same run.

    python -m bench.growth [--keys N] [--quick]

- record GET and PUT of random keys (wrk) on each store, each in its own data dir and server,
  in alternating rounds; the ratio is the big store's rate over the small one's (target:
  within 20%, i.e. at least 0.80);
- for comparison, record GET of both stores on servers without the record cache
  (`KVBOX_RECORD_CACHE_SIZE=0`), so that neither store's GETs come from memory;
- key-listing pages of 1000 at five positions of the big store (target p50 < 20 ms);
- the data dir's size per record.

The stores are populated in-process through the index's public `put_record`, many writes in
flight at once (so the group commit batches them), and kept under bench/.cache/ keyed by the
index schema version and the record count, so later runs reuse them. The timed PUTs replace
existing records with bodies of the same size: a reused store keeps its count.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.cpus import add_pin_option, pin_if_asked
from bench.listing import PAGE, _check_page, _lat, _timed, cached_store, key_at, positions
from bench.report import Report
from bench.servers import BENCH_TOKEN, auth_headers, start_kvbox
from bench.wrk import WrkResult, random_key_script, run_wrk

CACHE_VERSION = 1  # bump when the populated layout below changes
CACHE_ROOT = Path(__file__).resolve().parent / ".cache"
SMALL = 1_000
BIG = 10_000_000
SIZE = 100  # bytes per record, inline in the index
IN_FLIGHT = 1024  # writes awaited together while populating
POPULATE_LIMIT_S = 7200.0
RATE_TARGET = 0.80
LIST_TARGET_MS = 20.0
WARMUP_S = 2.0
WARM_CHUNK = 1 << 20
UNCACHED = {"KVBOX_RECORD_CACHE_SIZE": "0"}  # every record read from the index


@dataclass(frozen=True)
class Grown:
    data_dir: Path
    store_id: str
    keys: int
    populate_s: float
    reused: bool

    def record_prefix(self) -> str:
        return f"/v2/key-value-stores/{self.store_id}/records/key-"


def ensure_grown(cache_root: Path, keys: int) -> Grown:
    """A data dir holding user `admin` (BENCH_TOKEN) and store `growth` with `keys` records
    `key-00000000`... of SIZE bytes."""
    from kvbox.backends.sqlite.schema import SCHEMA_VERSION

    final = cache_root / f"growth-v{CACHE_VERSION}-schema{SCHEMA_VERSION}-{keys}"
    return Grown(*cached_store(final, keys, _populate))


async def _populate(data_dir: Path, keys: int) -> str:
    from kvbox.core.models import RecordMeta
    from kvbox.service.container import build_services
    from kvbox.service.principal import Principal
    from kvbox.service.settings import Settings

    services = build_services(Settings(data_dir=data_dir, backend="sqlite"))
    try:
        issued = await services.users.create_user("admin", token=BENCH_TOKEN)
        resolved, _ = await services.stores.get_or_create(Principal(user=issued.user), name="growth")
        store_id, now, put = resolved.store.id, services.clock.now_ms(), services.index.put_record
        value = b"v" * SIZE
        deadline = time.monotonic() + POPULATE_LIMIT_S
        step = max(keys // 20, IN_FLIGHT)
        for first in range(0, keys, IN_FLIGHT):
            batch = [
                RecordMeta(key=key_at(i), content_type="application/octet-stream", encoding="identity", size=SIZE,
                           etag=f"{i:024x}", modified_at=now, inline=value)
                for i in range(first, min(first + IN_FLIGHT, keys))
            ]  # fmt: skip
            await asyncio.gather(*(put(store_id, meta) for meta in batch))
            if (first + IN_FLIGHT) % step < IN_FLIGHT:
                print(f"    populated {min(first + IN_FLIGHT, keys):,} / {keys:,} records", flush=True)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"populating {keys:,} records took over {POPULATE_LIMIT_S:.0f} s")
        return store_id
    finally:
        await services.close()


def data_size(data_dir: Path) -> int:
    """Bytes of every file in the data dir (database, WAL, blobs)."""
    return sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())


def run_growth(
    report: Report, *, cache_root: Path, keys: int, workers: int, seconds: float, rounds: int, samples: int,
    logs: Path, connections: int = 64,
) -> None:  # fmt: skip
    section = f"growth, {keys:,}-record store against {SMALL:,} (embedded, {workers} worker(s))"
    big, small = ensure_grown(cache_root, keys), ensure_grown(cache_root, SMALL)
    how = "reused from bench/.cache" if big.reused else "populated in this run"
    report.info(section, "populate time (in-process put_record, group-committed)",
                f"{big.populate_s:.0f} s ({keys / big.populate_s:,.0f} records/s; {how})")  # fmt: skip
    size = data_size(big.data_dir)
    report.info(section, "data dir size per record", f"{size / keys:,.0f} B ({size / 2**30:.2f} GiB in all)",
                baseline=f"{SIZE} B of value per record")  # fmt: skip
    with (
        start_kvbox(big.data_dir, workers, logs) as kb,
        start_kvbox(small.data_dir, workers, logs) as ks,
        start_kvbox(big.data_dir, workers, logs, UNCACHED) as kbu,
        start_kvbox(small.data_dir, workers, logs, UNCACHED) as ksu,
    ):
        runs: dict[tuple[str, str], Callable[[float], WrkResult]] = {}
        servers = (("big", kb, big, ("GET", "PUT")), ("small", ks, small, ("GET", "PUT")),
                   ("big uncached", kbu, big, ("GET",)), ("small uncached", ksu, small, ("GET",)))  # fmt: skip
        for label, server, grown, methods in servers:
            for method in methods:
                script = random_key_script(BENCH_TOKEN, grown.record_prefix(), keys=grown.keys, method=method,
                                           size=SIZE)  # fmt: skip
                runs[(method, label)] = _runner(server.url, script, connections, warm=grown.data_dir)
        for run in runs.values():
            run(WARMUP_S)
        results: dict[tuple[str, str], list[WrkResult]] = {name: [] for name in runs}
        for _ in range(rounds):  # interleaved, so drift on the shared machine hits both alike
            for name, run in runs.items():
                results[name].append(run(seconds))
        _rates(report, section, results)
        _listing(report, section, kb.url, big, samples)
    report.note(
        f"{section}: random keys of each store per request (wrk, 2 threads, {connections} connections, {rounds} "
        f"round(s) of {seconds:.0f} s per figure, stores alternating); PUT replaces a record with a body of the "
        f"same {SIZE} bytes. Each store has its own data dir and server. Before each run the store's index file "
        f"is read through once, so that it sits in the OS page cache as on a server in steady use. Every record "
        f"of the small store fits in a worker's record cache, while nearly every GET of the big store reads the "
        f"index: the uncached GET row compares the two stores with a second server on each that reads every "
        f"record from the index (KVBOX_RECORD_CACHE_SIZE=0). Listing pages as in the listing section."
    )


def _runner(url: str, script: str, connections: int, warm: Path | None = None) -> Callable[[float], WrkResult]:
    def run(seconds: float) -> WrkResult:
        if warm is not None:
            read_through(warm)
        return run_wrk(url, script, seconds=seconds, connections=connections)

    return run


def read_through(data_dir: Path) -> None:
    """Read the index file once, so that it is in the OS page cache as on a server in steady use
    (this machine's VM hands idle page cache back to its host within minutes)."""
    for path in data_dir.glob("*.sqlite3*"):
        with path.open("rb", buffering=0) as f:
            while f.read(WARM_CHUNK):
                pass


def _rates(report: Report, section: str, results: dict[tuple[str, str], list[WrkResult]]) -> None:
    for method in ("GET", "PUT"):
        value, baseline, ratio, valid = _paired(report, section, results, method, "")
        report.check(
            section, f"{method} random record, big store", value, baseline=f"{baseline} ({SMALL:,}-record store)",
            ratio=f"{ratio:.2f}", target=f"≥ {RATE_TARGET:.2f}", passed=ratio >= RATE_TARGET, valid=valid,
        )  # fmt: skip
    value, baseline, ratio, _ = _paired(report, section, results, "GET", " uncached")
    report.info(section, "GET random record, big store, both stores without the record cache", value,
                baseline=f"{baseline} ({SMALL:,}-record store, uncached)", ratio=f"{ratio:.2f}")  # fmt: skip


def _paired(
    report: Report, section: str, results: dict[tuple[str, str], list[WrkResult]], method: str, label: str
) -> tuple[str, str, float, bool]:
    """The big store's `method` runs against the small store's, on the servers labelled `big` and
    `small` + `label`: both median rates, the median of the per-round ratios, and whether every
    request succeeded (failures are reported)."""
    big, small = results[(method, "big" + label)], results[(method, "small" + label)]
    errors = sum(r.errors for r in big + small)
    if errors:
        report.error(section, f"{method}{label}: {errors} failed requests")
    ratio = statistics.median(b.rps / s.rps for b, s in zip(big, small, strict=True))
    rate = "{:,.0f} req/s".format
    return rate(statistics.median(r.rps for r in big)), rate(statistics.median(r.rps for r in small)), ratio, not errors


def _listing(report: Report, section: str, url: str, big: Grown, samples: int) -> None:
    keys_url = f"{url}/v2/key-value-stores/{big.store_id}/keys"
    with httpx.Client(headers=auth_headers(), timeout=30) as client:
        for label, first in positions(big.keys):
            params = {"limit": str(PAGE)}
            if first > 0:
                params["exclusiveStartKey"] = key_at(first - 1)
            problem = _check_page(client, keys_url, params, first, big.keys)
            if problem:
                report.error(section, f"wrong page at {label}: {problem}")
            times = _timed(client, keys_url, params, samples, 30.0)
            p50 = statistics.median(times)
            report.check(
                section, f"page of {PAGE} keys at {label} (key #{first:,})", _lat(times), baseline="—", ratio="—",
                target=f"p50 < {LIST_TARGET_MS:.0f} ms", passed=p50 < LIST_TARGET_MS, valid=problem is None,
            )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.growth", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--keys", type=int, default=BIG, help=f"records in the big store (default {BIG:,})")
    p.add_argument("--quick", action="store_true", help="3 s wrk runs, one round")
    p.add_argument("--workers", type=int, default=1)
    add_pin_option(p)
    args = p.parse_args(argv)
    pin_if_asked(p, args.pin, [args.workers])
    report = Report(mode="quick" if args.quick else "full")
    logs = CACHE_ROOT / "logs"
    run_growth(report, cache_root=CACHE_ROOT, keys=args.keys, workers=args.workers, seconds=3 if args.quick else 5,
               rounds=1 if args.quick else 3, samples=30 if args.quick else 100, logs=logs)  # fmt: skip
    print()
    print(report.markdown())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
