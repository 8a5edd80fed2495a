"""Console page times: server time per page with 10,000 stores and a 1,000,000-record store.

`python -m bench.console [--stores N] [--records N] [--samples N]`

The data is built in-process through the service layer (stores) and the index's public
`put_record` (records), and kept under bench/.cache/ keyed by the index schema version and
the sizes, so later runs reuse it. Each page is requested by calling the ASGI app directly
(no network, no HTTP client): the time is from the call until the last body byte is sent,
i.e. server time only. Target: p99 < 200 ms for every page, and < 50 ms for the store list
sorted by name or searched (served by the index on the owner and the folded name).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

CACHE_VERSION = 1  # bump when the populated layout below changes
CACHE_ROOT = Path(__file__).resolve().parent / ".cache"
TOKEN = "bench-console-token-0123456789"
TARGET_MS = 200.0
INDEXED_TARGET_MS = 50.0  # store list pages by name and searches
IN_FLIGHT = 1024  # record writes awaited together while populating
READY = "ready.json"
UNNAMED_EVERY = 10  # every 10th store is unnamed
CONTENT_TYPES = (
    "application/json; charset=utf-8",
    "text/plain; charset=utf-8",
    "image/png",
    "application/octet-stream",
)
VALUES = (b'{"n": 1, "ok": true}', b"hello, console", b"\x89PNG\r\n\x1a\n", b"\x00\x01\x02\x03")

Message = MutableMapping[str, Any]
ASGI = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]


def key_at(i: int) -> str:
    return f"key-{i:08d}"


@dataclass(frozen=True)
class Populated:
    data_dir: Path
    big_store_id: str
    stores: int
    records: int
    populate_s: float
    reused: bool


def ensure_populated(stores: int, records: int, cache_root: Path = CACHE_ROOT) -> Populated:
    """A data dir with user `bench` owning `stores` stores, one of which (`big`) holds `records` records."""
    from kvbox.backends.sqlite.schema import SCHEMA_VERSION

    final = cache_root / f"console-v{CACHE_VERSION}-schema{SCHEMA_VERSION}-{stores}-{records}"
    if (final / READY).exists():
        meta = json.loads((final / READY).read_text())
        return Populated(final / "data", meta["big_store_id"], stores, records, meta["populate_s"], reused=True)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    started = time.perf_counter()
    big = asyncio.run(_populate(partial / "data", stores, records))
    populate_s = time.perf_counter() - started
    (partial / READY).write_text(json.dumps({"big_store_id": big, "populate_s": populate_s}))
    partial.rename(final)  # only a complete data dir ever sits under the final name
    return Populated(final / "data", big, stores, records, populate_s, reused=False)


async def _populate(data_dir: Path, stores: int, records: int) -> str:
    from kvbox.core.models import RecordMeta
    from kvbox.service.container import build_services
    from kvbox.service.principal import Principal
    from kvbox.service.settings import Settings

    services = build_services(Settings(data_dir=data_dir, backend="sqlite"))
    try:
        issued = await services.users.create_user("bench", token=TOKEN)
        owner = Principal(user=issued.user, token=issued.token)
        big, _ = await services.stores.get_or_create(owner, name="big")
        for i in range(1, stores):
            name = None if i % UNNAMED_EVERY == 0 else f"store-{i:05d}"
            await services.stores.get_or_create(owner, name=name)
            if i % 2000 == 0:
                print(f"    created {i:,} / {stores:,} stores", flush=True)
        now = services.clock.now_ms()
        step = max(records // 10, IN_FLIGHT)
        for first in range(0, records, IN_FLIGHT):
            metas = [
                RecordMeta(
                    key=key_at(i), content_type=CONTENT_TYPES[i % len(CONTENT_TYPES)], encoding="identity",
                    size=len(VALUES[i % len(VALUES)]), etag=f"{i:024x}", modified_at=now,
                    inline=VALUES[i % len(VALUES)],
                )
                for i in range(first, min(first + IN_FLIGHT, records))
            ]  # fmt: skip
            # Many writes in flight at once: the group commit takes them in a few transactions.
            await asyncio.gather(*(services.index.put_record(big.store.id, meta) for meta in metas))
            if (first + IN_FLIGHT) % step < IN_FLIGHT:
                print(f"    put {min(first + IN_FLIGHT, records):,} / {records:,} records", flush=True)
        return big.store.id
    finally:
        await services.close()


async def call(app: ASGI, method: str, target: str, *, headers: dict[str, str] | None = None,
               body: bytes = b"") -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    """One request straight into the ASGI app; returns status, headers and body."""
    path, _, query = target.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
        "server": ("127.0.0.1", 8790), "client": ("127.0.0.1", 50000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "127.0.0.1:8790", **(headers or {})}.items()],
    }  # fmt: skip
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    status = 0
    out_headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for k, v in message.get("headers", []):
                name = k.decode().lower()
                # Several Set-Cookie headers are kept, joined by newlines.
                out_headers[name] = f"{out_headers[name]}\n{v.decode()}" if name in out_headers else v.decode()
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, out_headers, b"".join(chunks)


async def sign_in(app: ASGI) -> str:
    """Sign in through the console's own form; returns the Cookie header for later requests."""
    status, headers, body = await call(app, "GET", "/sign-in")
    login_cookie = headers["set-cookie"].split(";", 1)[0]
    login_token = re.search(rb'name="login_token" value="([^"]+)"', body)
    assert status == 200 and login_token, "sign-in page did not render"
    form = urlencode({"token": TOKEN, "login_token": login_token.group(1).decode(), "next": "/stores"}).encode()
    status, headers, _ = await call(
        app, "POST", "/sign-in", body=form,
        headers={"cookie": login_cookie, "content-type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    cookies = [c.split(";", 1)[0] for c in headers.get("set-cookie", "").splitlines()]
    session = [c for c in cookies if c.startswith("kvbox_session=")]
    assert status == 303 and session, f"sign-in failed ({status})"
    return session[0]


def pages(pop: Populated) -> list[tuple[str, str, float]]:
    big = pop.big_store_id
    named = pop.stores - pop.stores // UNNAMED_EVERY
    deep_store_page = max(1, (named - 1) // 50 + 1)
    deep_key = key_at(pop.records * 9 // 10)
    deep = urlencode(
        {"after": deep_key, "page": pop.records * 9 // 10 // 50 + 1, "trail": key_at(pop.records * 9 // 10 - 50)}
    )
    t, fast = TARGET_MS, INDEXED_TARGET_MS
    return [
        ("store list, page 1", "/stores", t),
        (f"store list, last page ({deep_store_page})", f"/stores?page={deep_store_page}", t),
        ("store list with unnamed, page 1", "/stores?unnamed=1", t),
        ("store list, sorted by name", "/stores?sort=name&dir=asc", fast),
        ("store list, sorted by name, descending, with unnamed", "/stores?sort=name&dir=desc&unnamed=1", fast),
        (f"store list, sorted by name, last page ({deep_store_page})",
         f"/stores?sort=name&dir=asc&page={deep_store_page}", fast),
        ("store list, search by name", "/stores?q=store-0999", fast),
        ("store list, search matching 1,000 stores, by name", "/stores?q=store-05&sort=name", fast),
        ("store detail + records tab, first page", f"/stores/{big}", t),
        ("records tab, cursor at 90%", f"/stores/{big}?{deep}", t),
        ("records tab, prefix filter", f"/stores/{big}?prefix=key-0050", t),
        ("record view (JSON)", f"/stores/{big}/records/{key_at(pop.records // 2 - (pop.records // 2) % 4)}", t),
        ("settings tab", f"/stores/{big}/settings", t),
        ("API tab", f"/stores/{big}/api", t),
    ]  # fmt: skip


@dataclass(frozen=True)
class Timing:
    label: str
    path: str
    p50: float
    p99: float
    n: int
    size: int
    target: float = TARGET_MS

    @property
    def passed(self) -> bool:
        return self.p99 < self.target


async def measure(pop: Populated, *, samples: int, budget_s: float = 20.0) -> list[Timing]:
    from kvbox.server import create_app
    from kvbox.service.settings import Settings

    settings = Settings(data_dir=pop.data_dir, backend="sqlite", rate_limits=False, public_url="http://127.0.0.1:8790")
    app = create_app(settings)
    try:
        cookie = await sign_in(app)
        results = []
        for label, path, target in pages(pop):
            headers = {"cookie": cookie}
            for _ in range(3):  # warm-up: templates compiled, caches filled
                status, _, body = await call(app, "GET", path, headers=headers)
                assert status == 200, f"{path} answered {status}: {body[:300]!r}"
            times: list[float] = []
            deadline = time.monotonic() + budget_s
            while len(times) < samples and time.monotonic() < deadline:
                t = time.perf_counter()
                status, _, body = await call(app, "GET", path, headers=headers)
                times.append((time.perf_counter() - t) * 1000)
                assert status == 200, f"{path} answered {status}"
            ordered = sorted(times)
            p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
            results.append(Timing(label, path, statistics.median(ordered), p99, len(ordered), len(body), target))
            print(
                f"  {label:<42} p50 {results[-1].p50:7.1f} ms  p99 {p99:7.1f} ms  ({len(body) // 1024} KiB)", flush=True
            )
        return results
    finally:
        await app.aclose()


def markdown(pop: Populated, timings: list[Timing]) -> str:
    lines = [
        f"Console server time per page: {pop.stores:,} stores, a {pop.records:,}-record store "
        f"(in-process ASGI calls, target p99 < {TARGET_MS:.0f} ms; "
        f"< {INDEXED_TARGET_MS:.0f} ms sorted by name or searched)",
        "",
        "| page | p50 ms | p99 ms | n | HTML KiB | verdict |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for t in timings:
        verdict = "PASS" if t.passed else "MISS"
        lines.append(f"| {t.label} | {t.p50:.1f} | {t.p99:.1f} | {t.n} | {t.size / 1024:.0f} | {verdict} |")
    return "\n".join(lines)


def run_console(report: Any, *, stores: int, records: int, samples: int) -> None:
    """For bench/run.py: the same figures as rows of its Report."""
    section = f"console pages, {stores:,} stores, {records:,}-record store"
    pop = ensure_populated(stores, records)
    how = "reused from bench/.cache" if pop.reused else "populated in this run"
    report.info(section, "populate time (in-process)", f"{pop.populate_s:.1f} s ({how})")
    for t in asyncio.run(measure(pop, samples=samples)):
        report.check(
            section, t.label, f"p50 {t.p50:.1f} ms, p99 {t.p99:.1f} ms (n={t.n})", baseline="—", ratio="—",
            target=f"p99 < {t.target:.0f} ms", passed=t.passed,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.console", description=__doc__)
    p.add_argument("--stores", type=int, default=10_000)
    p.add_argument("--records", type=int, default=1_000_000)
    p.add_argument("--samples", type=int, default=30)
    args = p.parse_args(argv)
    print(f"== console ({args.stores:,} stores, {args.records:,} records)", flush=True)
    pop = ensure_populated(args.stores, args.records)
    print(f"  data: {'reused' if pop.reused else 'populated'} in {pop.populate_s:.0f} s at {pop.data_dir}", flush=True)
    timings = asyncio.run(measure(pop, samples=args.samples))
    print()
    print(markdown(pop, timings))
    return 0 if all(t.passed for t in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
