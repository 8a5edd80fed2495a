"""Local-mode SDK benchmark: kvbox's `KeyValueStore` against crawlee's file-system storage, same run.

Both write 1 KiB JSON records into a temp folder with the same durability (a temporary file
renamed over the target, no fsync), then read them back and iterate the keys. Each side runs
a few rounds on a fresh store and keeps its best; the ratios are what matter.

The folder is in memory (/dev/shm) where there is one, so that the figures compare the two
libraries rather than the disk: on a virtual machine's disk, file creation and renames ran
anywhere from 1,000 to 23,000 a second from one minute to the next, and set rates with them
(`--dir` picks another folder).

    .venv/bin/python -m bench.sdk_local          # about a minute on a 2-core machine
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
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
    # The writes of earlier runs and sections flushed first: the system throttles a process that
    # writes while much is waiting to be written back, which fell on either side at random.
    os.sync()
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


def memory_dir() -> str | None:
    """/dev/shm when it is a writable folder, else None (the system's temp folder)."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


async def kvbox_round(n: int, passes: int, base: str | None) -> Rates:
    with tempfile.TemporaryDirectory(prefix="kvbox-bench-", dir=base) as tmp:
        config = Configuration(storage_dir=tmp)
        store = await KeyValueStore.open(name="bench", configuration=config)
        try:
            return await measure(store, n, passes)
        finally:
            await KeyValueStore.close_all()


async def crawlee_round(n: int, passes: int, base: str | None) -> Rates:
    from crawlee.configuration import Configuration as CrawleeConfiguration
    from crawlee.storage_clients import FileSystemStorageClient
    from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

    with tempfile.TemporaryDirectory(prefix="crawlee-bench-", dir=base) as tmp:
        config = CrawleeConfiguration(storage_dir=tmp, purge_on_start=False)
        store = await CrawleeKeyValueStore.open(
            name="bench", configuration=config, storage_client=FileSystemStorageClient()
        )
        try:
            return await measure(store, n, passes)
        finally:
            await store.drop()


async def run(n: int, rounds: int, passes: int, base: str | None = None) -> dict[str, Rates]:
    logging.getLogger("crawlee").setLevel(logging.ERROR)
    results = {"crawlee": Rates(), "kvbox": Rates()}
    for _ in range(rounds):
        # Interleaved, so both sides see the same machine state (page cache, other load).
        results["crawlee"] = results["crawlee"].best(await crawlee_round(n, passes, base))
        results["kvbox"] = results["kvbox"].best(await kvbox_round(n, passes, base))
    return results


def report(results: dict[str, Rates], folder: str) -> bool:
    import crawlee

    base, ours = results["crawlee"], results["kvbox"]
    print(
        f"local mode, 1 KiB JSON records in {folder} (crawlee {crawlee.__version__} FileSystemStorageClient "
        "as baseline)"
    )
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
    parser.add_argument("--dir", help="the folder the stores go in (default: /dev/shm if there is one, else the "
                        "system's temp folder)")  # fmt: skip
    args = parser.parse_args()
    base = args.dir or memory_dir()
    report(asyncio.run(run(args.records, args.rounds, args.passes, base)), base or tempfile.gettempdir())


if __name__ == "__main__":
    main()
