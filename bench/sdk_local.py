"""Local-mode SDK benchmark: kvbox's `KeyValueStore` against crawlee's file-system storage, same run.

Both write 1 KiB JSON records into a temp folder with the same durability (a temporary file
renamed over the target, no fsync), then read them back and iterate the keys. Each side runs
a few rounds on a fresh store and keeps its best; the ratios are what matter.

    .venv/bin/python -m bench.sdk_local          # about a minute on a 2-core machine
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from kvbox.sdk import Configuration, KeyValueStore

TARGETS = {"set": 10.0, "get": 10.0, "iterate": 20.0}


def record(i: int) -> dict[str, Any]:
    """A JSON object of 1 KiB when serialised."""
    body = {"id": i, "url": f"https://example.com/item/{i}", "title": f"Item {i}", "tags": ["a", "b", "c"]}
    filler = 1024 - len(str(body).encode()) - 12
    body["text"] = "x" * max(filler, 0)
    return body


@dataclass
class Rates:
    set: float = 0.0
    get: float = 0.0
    iterate: float = 0.0

    def best(self, other: Rates) -> Rates:
        return Rates(max(self.set, other.set), max(self.get, other.get), max(self.iterate, other.iterate))


async def timed(n: int, action: Callable[[int], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    for i in range(n):
        await action(i)
    return n / (time.perf_counter() - start)


async def measure(store: Any, n: int, passes: int) -> Rates:
    """Set, get and iterate rates of a crawlee-shaped store (`set_value`, `get_value`, `iterate_keys`)."""
    values = [record(i) for i in range(n)]
    keys = [f"item-{i:06d}" for i in range(n)]
    set_rate = await timed(n, lambda i: store.set_value(keys[i], values[i]))
    get_rate = await timed(n, lambda i: store.get_value(keys[i]))
    for i in (0, n // 2, n - 1):  # the data came back intact
        assert await store.get_value(keys[i]) == values[i]
    start = time.perf_counter()
    seen = 0
    for _ in range(passes):
        async for _item in store.iterate_keys():
            seen += 1
    assert seen == n * passes, seen
    return Rates(set_rate, get_rate, seen / (time.perf_counter() - start))


async def kvbox_round(n: int, passes: int) -> Rates:
    with tempfile.TemporaryDirectory(prefix="kvbox-bench-") as tmp:
        config = Configuration(storage_dir=tmp)
        store = await KeyValueStore.open(name="bench", configuration=config)
        try:
            return await measure(store, n, passes)
        finally:
            await KeyValueStore.close_all()


async def crawlee_round(n: int, passes: int) -> Rates:
    from crawlee.configuration import Configuration as CrawleeConfiguration
    from crawlee.storage_clients import FileSystemStorageClient
    from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

    with tempfile.TemporaryDirectory(prefix="crawlee-bench-") as tmp:
        config = CrawleeConfiguration(storage_dir=tmp, purge_on_start=False)
        store = await CrawleeKeyValueStore.open(
            name="bench", configuration=config, storage_client=FileSystemStorageClient()
        )
        try:
            return await measure(store, n, passes)
        finally:
            await store.drop()


async def run(n: int, rounds: int, passes: int) -> dict[str, Rates]:
    logging.getLogger("crawlee").setLevel(logging.ERROR)
    results = {"crawlee": Rates(), "kvbox": Rates()}
    for _ in range(rounds):
        # Interleaved, so both sides see the same machine state (page cache, other load).
        results["crawlee"] = results["crawlee"].best(await crawlee_round(n, passes))
        results["kvbox"] = results["kvbox"].best(await kvbox_round(n, passes))
    return results


def report(results: dict[str, Rates]) -> bool:
    import crawlee

    base, ours = results["crawlee"], results["kvbox"]
    print(f"local mode, 1 KiB JSON records (crawlee {crawlee.__version__} FileSystemStorageClient as baseline)")
    print(f"{'operation':<10}{'crawlee /s':>14}{'kvbox /s':>14}{'ratio':>9}{'target':>9}")
    ok = True
    for op, target in TARGETS.items():
        b, k = getattr(base, op), getattr(ours, op)
        ratio = k / b if b else float("inf")
        ok &= ratio >= target
        flag = "ok" if ratio >= target else "MISSED"
        print(f"{op:<10}{b:>14,.0f}{k:>14,.0f}{ratio:>8.1f}x{target:>8.0f}x  {flag}")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=3, help="key iterations per round")
    args = parser.parse_args()
    report(asyncio.run(run(args.records, args.rounds, args.passes)))


if __name__ == "__main__":
    main()
