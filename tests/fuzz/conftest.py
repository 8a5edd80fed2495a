"""Fuzzing fixtures: an app per backend driven from synchronous hypothesis tests through one
event loop, and a snapshot of everything stored (to prove a refused request changed nothing).

Examples are derandomized (the same inputs on every run) and bounded per test, so the whole
fuzzing suite stays within a minute or two of CI time. `KVBOX_FUZZ_SCALE=N` (`make fuzz`: 10)
runs N times as many examples, with new random inputs on every run; a failure then prints the
blob that reproduces it (`@reproduce_failure`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, settings

from conftest import ALICE_TOKEN, BACKENDS, BOB_TOKEN
from kvbox.core.clock import FakeClock
from kvbox.server import create_app
from kvbox.service.container import Services, build_services
from kvbox.service.settings import Settings

T = TypeVar("T")


def fuzz_scale() -> int:
    """How many times the bounded example counts to run (`KVBOX_FUZZ_SCALE`, default 1)."""
    given = os.environ.get("KVBOX_FUZZ_SCALE", "1")
    if not given.isdigit() or int(given) < 1:
        raise pytest.UsageError(f"KVBOX_FUZZ_SCALE must be a whole number from 1 up, not {given!r}")
    return int(given)


SCALE = fuzz_scale()
FUZZ = settings(
    deadline=None,
    derandomize=SCALE == 1,
    print_blob=SCALE > 1,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Driven:
    """One app on one backend, with alice (who owns store `~fuzz`) and bob."""

    services: Services
    client: httpx.AsyncClient
    loop: asyncio.AbstractEventLoop
    backend: str

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


def build(backend: str, data_dir: Path, scale_out: dict[str, Any]) -> Driven:
    loop = asyncio.new_event_loop()
    settings_ = Settings(**scale_out, backend=backend, data_dir=data_dir, public_url="http://kvbox.test",
                         inline_threshold=512, max_record_size=256 * 1024, rate_limits=False)  # fmt: skip
    svc = build_services(settings_, clock=FakeClock(start_ms=1_800_000_000_000))
    svc.changes.max_wait_s = 0.05  # a long-poll answers at once: fuzzing is about answers, not waiting

    async def seed() -> httpx.AsyncClient:
        await svc.index.migrate()
        await svc.users.create_user("alice", token=ALICE_TOKEN)
        await svc.users.create_user("bob", token=BOB_TOKEN)
        transport = httpx.ASGITransport(app=create_app(services=svc))
        client = httpx.AsyncClient(transport=transport, base_url="http://kvbox.test")
        r = await client.post("/v2/key-value-stores", params={"name": "fuzz"}, json={},
                              headers={"Authorization": f"Bearer {ALICE_TOKEN}"})  # fmt: skip
        assert r.status_code == 201
        return client

    return Driven(svc, loop.run_until_complete(seed()), loop, backend)


def close(driven: Driven) -> None:
    driven.run(driven.client.aclose())
    driven.run(driven.services.close())
    driven.loop.close()


@pytest.fixture(scope="module", params=BACKENDS)
def driven(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driven]:
    scale_out: dict[str, Any] = request.getfixturevalue("scale_out").settings() if request.param == "postgres" else {}
    app = build(request.param, tmp_path_factory.mktemp("fuzz") / "data", scale_out)
    try:
        yield app
    finally:
        close(app)


async def snapshot(svc: Services) -> Any:
    """What is stored, without counters and access times: users' settings, every store's
    fields, grants and records (by ETag)."""
    index = svc.index
    out: dict[str, Any] = {}
    for user in await index.list_users():
        stores = await index.list_stores(user.id, include_unnamed=True, offset=0, limit=10_000, desc=False)
        out[user.id] = (user.default_general_access, {s.id: await _store(svc, s) for s in stores.items})
    return out


async def _store(svc: Services, store: Any) -> Any:
    index = svc.index
    records = {}
    after = None
    while True:
        page = await index.list_keys(store.id, after=after, prefix=None, limit=1000)
        for item in page.items:
            meta = await index.get_record(store.id, item.key)
            records[item.key] = meta.etag if meta else None
        if not page.is_truncated:
            break
        after = page.next_key
    grants = sorted((g.user_id, g.permission) for g in await index.list_grants(store.id))
    return (store.name, store.title, store.general_access, store.schema, grants, records)
