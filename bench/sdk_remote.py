"""Remote-mode SDK benchmark: what the client and the SDK keep of the server's raw HTTP throughput.

Starts its own `kvbox serve` (or uses `--api-url` and `--token`), then, for 1 KiB JSON records,
measures in the same run: bare httpx requests (the server's own figure, the baseline),
`KvboxClientAsync`, and the SDK's `KeyValueStore` in remote mode, sequentially and with
16 requests in flight. `measure()` is what `bench/run.py` can call next to its server figures.

    .venv/bin/python -m bench.sdk_remote         # about half a minute
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bench.sdk_local import record
from kvbox.client import KvboxClient, KvboxClientAsync, StoreClientAsync
from kvbox.sdk import Configuration, KeyValueStore

Op = Callable[[int], Awaitable[Any]]


async def rate(n: int, op: Op, *, concurrency: int) -> float:
    """Operations per second running `op(0..n-1)` with `concurrency` in flight."""
    next_index = iter(range(n))

    async def worker() -> None:
        for i in next_index:
            await op(i)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - start)


async def measure(api_url: str, token: str, *, n: int = 1000) -> dict[str, dict[str, float]]:
    """Set/get rates (1 KiB JSON) for raw httpx, the client and the SDK; listing rate for the SDK."""
    values = [record(i) for i in range(n)]
    bodies = [json.dumps(v).encode() for v in values]
    results: dict[str, dict[str, float]] = {}
    async with KvboxClientAsync(token, api_url=api_url) as client:
        for concurrency in (1, 16):
            info = await client.key_value_stores().get_or_create()
            path = f"/v2/key-value-stores/{info.id}/records"
            headers = {"authorization": f"Bearer {token}", "content-type": "application/json; charset=utf-8"}
            async with httpx.AsyncClient(base_url=api_url, headers=headers) as raw:

                async def raw_put(i: int, raw: httpx.AsyncClient = raw, path: str = path) -> None:
                    (await raw.put(f"{path}/raw-{i}", content=bodies[i])).raise_for_status()

                async def raw_get(i: int, raw: httpx.AsyncClient = raw, path: str = path) -> None:
                    (await raw.get(f"{path}/raw-{i}")).raise_for_status()

                results[f"httpx x{concurrency}"] = {
                    "set": await rate(n, raw_put, concurrency=concurrency),
                    "get": await rate(n, raw_get, concurrency=concurrency),
                }
            store = client.key_value_store(info.id)

            async def client_set(i: int, s: StoreClientAsync = store) -> None:
                await s.set_record(f"c-{i}", values[i])

            async def client_get(i: int, s: StoreClientAsync = store) -> None:
                await s.get_record(f"c-{i}")

            results[f"client x{concurrency}"] = {
                "set": await rate(n, client_set, concurrency=concurrency),
                "get": await rate(n, client_get, concurrency=concurrency),
            }
            config = Configuration(remote=True, api_url=api_url, token=token, default_store_id=info.id)
            kvs = await KeyValueStore.open(configuration=config)

            async def sdk_set(i: int, k: KeyValueStore = kvs) -> None:
                await k.set_value(f"s-{i}", values[i])

            async def sdk_get(i: int, k: KeyValueStore = kvs) -> None:
                await k.get_value(f"s-{i}")

            results[f"sdk x{concurrency}"] = {
                "set": await rate(n, sdk_set, concurrency=concurrency),
                "get": await rate(n, sdk_get, concurrency=concurrency),
            }
            if concurrency == 1:
                start = time.perf_counter()
                listed = sum([1 async for _ in kvs.iterate_keys()])
                results["sdk x1"]["iterate"] = listed / (time.perf_counter() - start)
            await KeyValueStore.close_all()
            await store.delete()
    results["sync client x1"] = sync_rates(api_url, token, values)
    return results


def sync_rates(api_url: str, token: str, values: list[dict[str, Any]]) -> dict[str, float]:
    """The blocking client, one request at a time (its transport is lighter than the async one)."""
    with KvboxClient(token, api_url=api_url) as client:
        info = client.key_value_stores().get_or_create()
        store = client.key_value_store(info.id)
        start = time.perf_counter()
        for i, value in enumerate(values):
            store.set_record(f"y-{i}", value)
        set_rate = len(values) / (time.perf_counter() - start)
        start = time.perf_counter()
        for i in range(len(values)):
            store.get_record(f"y-{i}")
        get_rate = len(values) / (time.perf_counter() - start)
        store.delete()
    return {"set": set_rate, "get": get_rate}


@contextmanager
def own_server() -> Iterator[tuple[str, str]]:
    """A `kvbox serve` on a free port in a temp dir, and a token for a new user."""
    import socket

    with tempfile.TemporaryDirectory(prefix="kvbox-sdk-remote-") as tmp:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        url = f"http://127.0.0.1:{port}"
        data = os.path.join(tmp, "data")
        cli = [sys.executable, "-m", "kvbox.cli"]
        # Rate limits (200 record operations per second per store by default) would cap every figure.
        env = {**os.environ, "KVBOX_PUBLIC_URL": url, "KVBOX_RATE_LIMITS": "false"}
        server = subprocess.Popen(
            [*cli, "serve", "--data-dir", data, "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.1)
            made = subprocess.run(
                [*cli, "users", "create", "bench", "--data-dir", data], capture_output=True, text=True, check=True
            )
            yield url, made.stdout.strip().splitlines()[-1]
        finally:
            server.terminate()
            server.wait(timeout=30)


def report(results: dict[str, dict[str, float]]) -> None:
    print("remote mode, 1 KiB JSON records, one kvbox server on this machine")
    print("(httpx xN = bare httpx.AsyncClient requests with N in flight: the baseline for the same N)")
    print(f"{'caller':<16}{'set /s':>10}{'get /s':>10}{'set vs httpx':>14}{'get vs httpx':>14}")
    for name, rates in results.items():
        base = results["httpx " + name.split()[-1]]
        print(
            f"{name:<16}{rates['set']:>10,.0f}{rates['get']:>10,.0f}"
            f"{rates['set'] / base['set']:>13.2f}x{rates['get'] / base['get']:>13.2f}x"
        )
    print(f"sdk iterate_keys: {results['sdk x1']['iterate']:,.0f} keys/s")


def main() -> None:
    parser = argparse.ArgumentParser(description="Remote-mode SDK benchmark")
    parser.add_argument("--api-url")
    parser.add_argument("--token")
    parser.add_argument("--records", type=int, default=1000)
    args = parser.parse_args()
    if args.api_url:
        report(asyncio.run(measure(args.api_url, args.token, n=args.records)))
        return
    with own_server() as (url, token):
        report(asyncio.run(measure(url, token, n=args.records)))


if __name__ == "__main__":
    main()
