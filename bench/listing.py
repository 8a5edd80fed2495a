"""Key listing in a big store: pages of 1000 keys at several positions of a 1M-key store.

The store is populated in-process through the backend's public `MetadataIndex.put_record`
(one transaction per record, small inline bodies) and kept under bench/.cache/, keyed by
the index schema version and the key count, so later runs reuse it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.report import Report
from bench.servers import BENCH_TOKEN, auth_headers, start_kvbox

CACHE_VERSION = 1  # bump when the populated layout below changes
PAGE = 1000
TARGET_MS = 20.0
POPULATE_LIMIT_S = 1200.0
VALUE = b"value-01"
READY = "ready.json"


def key_at(i: int) -> str:
    """Zero-padded so that key order is index order."""
    return f"key-{i:08d}"


@dataclass(frozen=True)
class Populated:
    data_dir: Path
    store_id: str
    keys: int
    populate_s: float
    reused: bool


def ensure_populated(cache_root: Path, keys: int) -> Populated:
    """A data dir holding user `admin` (BENCH_TOKEN) and store `listing` with `keys` keys."""
    from kvbox.backends.sqlite.schema import SCHEMA_VERSION

    final = cache_root / f"listing-v{CACHE_VERSION}-schema{SCHEMA_VERSION}-{keys}"
    return Populated(*cached_store(final, keys, _populate))


def cached_store(
    final: Path, keys: int, populate: Callable[[Path, int], Coroutine[Any, Any, str]]
) -> tuple[Path, str, int, float, bool]:
    """The data dir under `final` (made by `populate(data_dir, keys)`, which returns the
    store's ID, unless a complete one is there): data dir, store ID, keys, seconds it took
    to populate, and whether it was reused."""
    ready = final / READY
    if ready.exists():
        meta = json.loads(ready.read_text())
        return final / "data", meta["store_id"], keys, meta["populate_s"], True
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(final, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    store_id = asyncio.run(populate(partial / "data", keys))
    populate_s = time.perf_counter() - started
    (partial / READY).write_text(json.dumps({"store_id": store_id, "keys": keys, "populate_s": populate_s}))
    partial.rename(final)  # only a complete store ever sits under the final name
    return final / "data", store_id, keys, populate_s, False


async def _populate(data_dir: Path, keys: int) -> str:
    from kvbox.core.models import RecordMeta
    from kvbox.service.container import build_services
    from kvbox.service.principal import Principal
    from kvbox.service.settings import Settings

    services = build_services(Settings(data_dir=data_dir, backend="sqlite"))
    try:
        issued = await services.users.create_user("admin", token=BENCH_TOKEN)
        owner = Principal(user=issued.user, token=issued.token)
        resolved, _ = await services.stores.get_or_create(owner, name="listing")
        store = resolved.store
        now = services.clock.now_ms()
        put = services.index.put_record
        deadline = time.monotonic() + POPULATE_LIMIT_S
        step = max(keys // 10, 1)
        for i in range(keys):
            meta = RecordMeta(
                key=key_at(i), content_type="application/octet-stream", encoding="identity", size=len(VALUE),
                etag=f"{i:024x}", modified_at=now, inline=VALUE,
            )  # fmt: skip
            await put(store.id, meta)
            if (i + 1) % step == 0:
                print(f"    populated {i + 1:,} / {keys:,} keys", flush=True)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"populating {keys:,} keys took over {POPULATE_LIMIT_S:.0f} s")
        return store.id
    finally:
        await services.close()


def positions(keys: int) -> list[tuple[str, int]]:
    """(label, index of the page's first key); near end is the last full page."""
    return [
        ("start", 0),
        ("25%", keys // 4),
        ("50%", keys // 2),
        ("75%", keys * 3 // 4),
        ("near end", keys - PAGE),
    ]


def run_listing(
    report: Report, *, cache_root: Path, keys: int, workers: int, samples: int, logs: Path, budget_s: float = 30.0
) -> None:
    section = f"list keys, {keys:,}-key store"
    pop = ensure_populated(cache_root, keys)
    how = "reused from bench/.cache" if pop.reused else "populated in this run"
    report.info(section, "populate time (in-process put_record)",
                f"{pop.populate_s:.1f} s ({keys / pop.populate_s:,.0f} keys/s; {how})")  # fmt: skip
    with start_kvbox(pop.data_dir, workers, logs) as kv, httpx.Client(headers=auth_headers(), timeout=30) as client:
        url = f"{kv.url}/v2/key-value-stores/{pop.store_id}/keys"
        floor = _timed(client, f"{kv.url}/health", {}, samples, budget_s)
        floor_p50 = statistics.median(floor)
        report.info(section, "GET /health round trip (floor)", _lat(floor))
        for label, first in positions(keys):
            params = {"limit": str(PAGE)}
            if first > 0:
                params["exclusiveStartKey"] = key_at(first - 1)
            problem = _check_page(client, url, params, first, keys)
            if problem:  # still timed: the figure is kept, the page's content is flagged
                report.error(section, f"wrong page at {label}: {problem}")
            times = _timed(client, url, params, samples, budget_s)
            p50 = statistics.median(times)
            report.check(
                section, f"page of {PAGE} at {label} (key #{first:,})", _lat(times),
                baseline=f"/health p50 {floor_p50:.2f} ms", ratio=f"{p50 / floor_p50:.1f}x floor",
                target=f"p50 < {TARGET_MS:.0f} ms", passed=p50 < TARGET_MS, valid=problem is None,
            )  # fmt: skip
    report.note(
        f"{section}: sequential GET /keys?limit={PAGE} (with exclusiveStartKey past the start) over one "
        f"keep-alive httpx connection against {workers} worker(s), {samples} timed requests per position after "
        "3 warm-ups; time is request sent to body received (JSON not parsed). As the store's owner the "
        "response carries a signed recordPublicUrl per key. Baseline: /health on the same server and client."
    )


def _check_page(client: httpx.Client, url: str, params: dict[str, str], first: int, keys: int) -> str | None:
    """What is wrong with the page, or None when it holds the expected keys."""
    r = client.get(url, params=params)
    r.raise_for_status()
    items = r.json()["data"]["items"]
    want = min(PAGE, keys - first)
    if len(items) != want or items[0]["key"] != key_at(first):
        got = items[0]["key"] if items else None
        return f"{len(items)} keys from {got!r}; expected {want} from {key_at(first)!r}"
    return None


def _timed(client: httpx.Client, url: str, params: dict[str, str], samples: int, budget_s: float) -> list[float]:
    """Times in ms of `samples` sequential requests to `url`, after three untimed ones."""
    return timed_in_turns(client, {url: url}, params, samples, budget_s)[url]


def timed_in_turns(client: httpx.Client, urls: dict[str, str], params: dict[str, str], samples: int,
                   budget_s: float) -> dict[str, list[float]]:  # fmt: skip
    """Request times in ms by name, after three untimed requests to each URL. The URLs take
    turns request by request, so that a change in the machine's load falls on all alike."""
    for url in urls.values():
        for _ in range(3):
            client.get(url, params=params).raise_for_status()
    times: dict[str, list[float]] = {name: [] for name in urls}
    deadline = time.monotonic() + budget_s
    for _ in range(samples):
        if time.monotonic() >= deadline:
            break
        for name, url in urls.items():
            t = time.perf_counter()
            r = client.get(url, params=params)
            times[name].append((time.perf_counter() - t) * 1000)
            r.raise_for_status()
    return times


def _lat(times: list[float]) -> str:
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"p50 {statistics.median(ordered):.2f} ms, p99 {p99:.2f} ms (n={len(ordered)})"
