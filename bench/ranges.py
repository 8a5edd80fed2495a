"""Range reads: 1 MiB from the middle of a big record (1 GiB in full runs), on the embedded
backend (a file seek) and on one scale-out node (an S3 ranged GET), with the node's memory.

Baselines, measured in the same run with requests interleaved: on the embedded backend a GET
of a whole 1 MiB record (also a blob), since reading 1 MiB from the middle of a big record
should cost what reading a 1 MiB record costs, whatever the big record's size; on the
scale-out node the same ranged GET sent to the S3 server directly, since moto (the S3 server
the bench runs) reads a whole object to answer a range of it, which real S3 does not. The
node's memory should stay flat. Standalone: `python -m bench.ranges [--quick]`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import boto3
import httpx
from tests.backing_services import AWS_TEST_ENV, MotoServer

from bench.bigfile import MIB
from bench.report import Report, fmt_ratio
from bench.rss import RssSampler
from bench.scaleout import backing_services, scale_out_nodes
from bench.servers import Server, auth_headers, create_store, start_kvbox, tree_rss

LATENCY_TARGET = 1.5  # a range from the middle of the big record vs the baseline
RSS_GROWTH_TARGET = 32 * MIB  # what serving 1 MiB ranges may add to the node's memory
CHUNK = random.Random(11).randbytes(MIB)  # the big record is this, repeated: every MiB-aligned MiB equals it


def _body(size: int) -> Iterator[bytes]:
    for _ in range(size // MIB):
        yield CHUNK


def _timed_get(client: httpx.Client, url: str, headers: dict[str, str], status: int) -> float:
    t = time.perf_counter()
    r = client.get(url, headers={**auth_headers(), **headers})
    elapsed = time.perf_counter() - t
    if r.status_code != status or r.content != CHUNK:
        raise RuntimeError(f"GET {url} {headers} gave {r.status_code} and {len(r.content)} bytes, not the chunk")
    return elapsed


def _direct_range(s3: MotoServer, size: int, first: int) -> Callable[[], float]:
    """A timed ranged GET of the big record's object, straight from the S3 server."""
    env = AWS_TEST_ENV
    direct = boto3.client(
        "s3", endpoint_url=s3.endpoint, region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip
    found = [
        (bucket["Name"], item["Key"])
        for bucket in direct.list_buckets()["Buckets"]
        for item in direct.list_objects_v2(Bucket=bucket["Name"]).get("Contents", [])
        if item["Size"] == size
    ]
    if len(found) != 1:
        raise RuntimeError(f"expected one {size}-byte object in the S3 server, found {len(found)}")
    bucket, key = found[0]

    def get() -> float:
        t = time.perf_counter()
        body = direct.get_object(Bucket=bucket, Key=key, Range=f"bytes={first}-{first + MIB - 1}")["Body"].read()
        elapsed = time.perf_counter() - t
        if body != CHUNK:
            raise RuntimeError("the S3 server's range is not the chunk")
        return elapsed

    return get


def _measure(client: httpx.Client, kv: Server, size: int, samples: int, s3: MotoServer | None) -> dict[str, float]:
    store = create_store(kv, "ranges")
    big, small = (f"{kv.url}/v2/key-value-stores/{store}/records/{key}" for key in ("big", "one-mib"))
    headers = {**auth_headers(), "Content-Type": "video/mp4", "Content-Length": str(size)}
    client.put(big, content=_body(size), headers=headers).raise_for_status()
    client.put(small, content=CHUNK, headers={**auth_headers(), "Content-Type": "video/mp4"}).raise_for_status()
    middle = size // 2 // MIB * MIB
    ranged = {"Range": f"bytes={middle}-{middle + MIB - 1}"}
    direct = _direct_range(s3, size, middle) if s3 is not None else None
    for _ in range(3):  # warm-up: connections, caches, the S3 client
        _timed_get(client, big, ranged, 206)
        _timed_get(client, small, {}, 200)
    idle = tree_rss(kv.proc.pid)
    ranges: list[float] = []
    wholes: list[float] = []
    directs: list[float] = []
    with RssSampler(kv.proc.pid, max_seconds=300) as rss:
        for _ in range(samples):  # interleaved, so drift on the shared machine hits all alike
            ranges.append(_timed_get(client, big, ranged, 206))
            wholes.append(_timed_get(client, small, {}, 200))
            if direct is not None:
                directs.append(direct())
    client.delete(big, headers=auth_headers()).raise_for_status()
    found = {"range": ranges, "whole": wholes, **({"direct": directs} if directs else {})}
    return {
        **{f"{name}_p50": statistics.median(v) for name, v in found.items()},
        **{f"{name}_p90": _p90(v) for name, v in found.items()},
        "idle_rss": idle, "peak_rss": rss.peak,
    }  # fmt: skip


def _ms(m: dict[str, float], name: str) -> str:
    return f"{m[name + '_p50'] * 1000:.1f} ms ({m[name + '_p90'] * 1000:.1f} ms)"


def _rows(report: Report, section: str, name: str, m: dict[str, float]) -> None:
    base, label = (
        ("direct", "the same range straight from S3") if "direct_p50" in m else ("whole", "whole 1 MiB record")
    )
    ratio = m["range_p50"] / m[f"{base}_p50"]
    report.check(
        section, f"{name}: range latency p50 (p90)", _ms(m, "range"), baseline=f"{_ms(m, base)}, {label}",
        ratio=fmt_ratio(m["range_p50"], m[f"{base}_p50"]), target=f"≤ {LATENCY_TARGET:.1f}",
        passed=ratio <= LATENCY_TARGET,
    )  # fmt: skip
    if base == "direct":
        report.info(section, f"{name}: whole 1 MiB record latency p50 (p90)", _ms(m, "whole"))
    growth = m["peak_rss"] - m["idle_rss"]
    report.check(
        section, f"{name}: node peak RSS during range reads (main + workers)", f"{m['peak_rss'] / MIB:.0f} MiB",
        baseline=f"idle {m['idle_rss'] / MIB:.0f} MiB",
        ratio=fmt_ratio(m["peak_rss"], m["idle_rss"]), target=f"grows < {RSS_GROWTH_TARGET / MIB:.0f} MiB",
        passed=growth < RSS_GROWTH_TARGET,
    )  # fmt: skip


def _p90(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * 0.9))]


def run_ranges(report: Report, *, size: int, workers: int, samples: int, workdir: Path, logs: Path) -> None:
    label = f"{size // MIB} MiB" if size < 1 << 30 else f"{size / (1 << 30):g} GiB"
    section = f"1 MiB range from the middle of a {label} record ({workers} worker{'s' if workers > 1 else ''})"
    extra = {"KVBOX_MAX_RECORD_SIZE": "2GiB"}
    found: dict[str, dict[str, float]] = {}
    with backing_services() as (pg, s3), httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0)) as client:
        for name in ("embedded", "scale-out"):
            with ExitStack() as stack:
                if name == "embedded":
                    kv = stack.enter_context(start_kvbox(workdir / "ranges", workers, logs, extra_env=extra))
                    found[name] = _measure(client, kv, size, samples, None)
                else:
                    (kv,) = scale_out_nodes(stack, pg, s3, 1, workers, workdir / "ranges-so", logs, extra)
                    found[name] = _measure(client, kv, size, samples, s3)
    for name, m in found.items():
        _rows(report, section, name, m)
    report.note(
        f"{section}: {samples} GETs of `Range: bytes=M-(M+1MiB-1)` (M the middle, MiB-aligned) and {samples} GETs "
        "of a whole 1 MiB record, interleaved on one keep-alive httpx connection after a warm-up (scale-out: also "
        "the same range straight from moto with boto3); every answer checked byte for byte. Embedded: the blob "
        "file is opened and seeked; scale-out: one S3 ranged GET. moto answers a range by reading the whole "
        "object, hence its own baseline. Node RSS sampled every 50 ms over the main process and its workers."
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ranges", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a 256 MiB record, 20 samples")
    p.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    args = p.parse_args(argv)
    import os
    import shutil

    cache = Path(__file__).resolve().parent / ".cache"
    workdir, logs = cache / f"ranges-{os.getpid()}", cache / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    report = Report(mode="quick" if args.quick else "full")
    try:
        size, samples = (256 * MIB, 20) if args.quick else (1024 * MIB, 30)
        run_ranges(report, size=size, workers=args.workers, samples=samples, workdir=workdir, logs=logs)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.markdown())
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
