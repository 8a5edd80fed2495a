"""Key listing with the record fields (content type, last write, ETag, expiry) against the listing
as it was before them, on the same data, in one run.

The store is populated by the earlier revision's own code (its `bench.listing`, cached under
bench/.cache by its schema version); this checkout opens a copy of it, which migrates the
schema as an upgrade would. Both versions then serve side by side and are timed in
turns, request by request, at the same positions of the store, so drift in the machine's load falls
on both alike.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import httpx

from bench.compare import worktree
from bench.listing import PAGE, _check_page, key_at, positions, timed_in_turns
from bench.report import Report
from bench.servers import auth_headers, start_kvbox

# The commit the record lifecycle was built on: its listing carries keys and sizes only.
BASELINE_REV = "da2e8af"
TARGET_RATIO = 1.10


def _populated_by(checkout: Path, cache_root: Path, keys: int) -> tuple[Path, str]:
    """The data dir and store id `bench.listing` of `checkout` populates (or finds cached)."""
    code = (
        "import sys; from pathlib import Path; from bench.listing import ensure_populated; "
        f"p = ensure_populated(Path({str(cache_root)!r}), {keys}); print(p.data_dir); print(p.store_id)"
    )
    env = {**os.environ, "PYTHONPATH": f"{checkout / 'src'}{os.pathsep}{checkout}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=3600, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"populating with {checkout.name} failed: {done.stderr.strip()[-500:]}")
    data_dir, store_id = done.stdout.strip().splitlines()[-2:]
    return Path(data_dir), store_id


def _upgraded(old: Path, cache_root: Path) -> Path:
    """A copy of the earlier revision's data dir, migrated by this checkout (cached)."""
    from kvbox.backends.sqlite.metadata import SqliteMetadataIndex
    from kvbox.backends.sqlite.schema import SCHEMA_VERSION

    final = cache_root / f"{old.parent.name}-upgraded-schema{SCHEMA_VERSION}"
    if (final / "ready").exists():
        return final / "data"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(old, final / "data")
    SqliteMetadataIndex(final / "data" / "kvbox.sqlite3")._conn.close()  # opening migrates
    (final / "ready").write_text("ok")
    return final / "data"


def run_listing_fields(report: Report, *, cache_root: Path, keys: int, workers: int, samples: int, rounds: int,
                       logs: Path, rev: str = BASELINE_REV) -> None:  # fmt: skip
    section = f"list keys with record fields, {keys:,}-key store"
    cache_root = cache_root.resolve()
    before = worktree(rev)
    old_dir, store_id = _populated_by(before, cache_root, keys)
    new_dir = _upgraded(old_dir, cache_root)
    work = cache_root / f"listing-fields-run-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(old_dir, work / "old")
    shutil.copytree(new_dir, work / "new")
    old_env = {"PYTHONPATH": str(before / "src")}
    try:
        with start_kvbox(work / "old", workers, logs, old_env) as old, start_kvbox(work / "new", workers, logs) as new:
            ratios: dict[str, list[float]] = {label: [] for label, _ in positions(keys)}
            times: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
            with httpx.Client(headers=auth_headers(), timeout=30) as client:
                for label, first in positions(keys):
                    params = {"limit": str(PAGE)}
                    if first > 0:
                        params["exclusiveStartKey"] = key_at(first - 1)
                    for name, server in (("old", old), ("new", new)):
                        problem = _check_page(client, f"{server.url}/v2/key-value-stores/{store_id}/keys", params,
                                              first, keys)  # fmt: skip
                        if problem:
                            report.error(section, f"{name} listing wrong at {label}: {problem}")
                    urls = {name: f"{server.url}/v2/key-value-stores/{store_id}/keys"
                            for name, server in (("old", old), ("new", new))}  # fmt: skip
                    for _ in range(rounds):
                        pair = timed_in_turns(client, urls, params, samples, 30.0)
                        for name, got in pair.items():
                            times[name].setdefault(label, []).extend(got)
                        ratios[label].append(statistics.median(pair["new"]) / statistics.median(pair["old"]))
            for label, _ in positions(keys):
                ratio = statistics.median(ratios[label])
                old_p50 = statistics.median(times["old"][label])
                new_p50 = statistics.median(times["new"][label])
                report.check(
                    section, f"page of {PAGE} at {label}: p50 with the fields", f"{new_p50:.2f} ms",
                    baseline=f"{rev} (keys and sizes): {old_p50:.2f} ms", ratio=f"{ratio:.2f}x",
                    target=f"≤ {TARGET_RATIO:.2f}x", passed=ratio <= TARGET_RATIO,
                )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.note(
        f"{section}: GET /keys?limit={PAGE} on the same {keys:,}-key store served by commit {rev} (before the "
        f"record fields) and by this checkout (its copy migrated by opening it), {workers} worker(s) each, in "
        f"{rounds} rounds of {samples} sequential requests per position and server, the two taking turns "
        "request by request over keep-alive connections; the ratio is the median of per-round p50 ratios."
    )
