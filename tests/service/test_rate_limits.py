"""Rate limits: the token buckets with a fake clock, then the same limits through the app.

Per store: 60 requests/s for store-level operations and 200/s for record operations; per user
a limit across all stores. Requests past a limit get `429 rate-limit-exceeded`; every response
says the limit that applies to it in `X-RateLimit-Limit`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from conftest import ALICE_TOKEN, BOB_TOKEN
from kvbox.core.clock import FakeClock
from kvbox.core.errors import RateLimitExceededError
from kvbox.server import create_app
from kvbox.service.container import Services, build_services
from kvbox.service.ratelimit import Limits, RateLimiter
from kvbox.service.settings import Settings

STORES = "/v2/key-value-stores"


def limiter(clock: FakeClock, processes: int = 1, **limits: Any) -> RateLimiter:
    return RateLimiter(clock, Limits(**limits), processes=processes)


def take(rl: RateLimiter, n: int, *, store: str | None = "s1", user: str = "u1", record_op: bool = False) -> None:
    for _ in range(n):
        rl.check(user_key=user, store_key=store, record_op=record_op)


def refused(rl: RateLimiter, *, store: str | None = "s1", user: str = "u1", record_op: bool = False) -> int:
    """The limit named by the 429 the next request gets (fails the test if it is let through)."""
    with pytest.raises(RateLimitExceededError) as caught:
        rl.check(user_key=user, store_key=store, record_op=record_op)
    err = caught.value
    assert (err.status, err.type) == (429, "rate-limit-exceeded")
    assert str(err.limit) in err.message
    return err.limit


# --- the limiter --------------------------------------------------------------------------


def test_store_limit(clock: FakeClock) -> None:
    rl = limiter(clock)
    take(rl, 60)
    assert refused(rl) == 60
    assert refused(rl) == 60  # and stays refused within the same instant
    take(rl, 60, store="s2")  # other stores have their own budget
    take(rl, 200, record_op=True)  # record operations on the same store too


def test_record_limit(clock: FakeClock) -> None:
    rl = limiter(clock)
    take(rl, 200, record_op=True)
    assert refused(rl, record_op=True) == 200
    take(rl, 60)  # store-level operations on the same store still pass
    take(rl, 200, store="s2", record_op=True)


def test_user_limit_spans_stores(clock: FakeClock) -> None:
    rl = limiter(clock, user_per_second=10)
    for i in range(5):
        take(rl, 2, store=f"store-{i}")
    assert refused(rl, store="store-fresh") == 10
    assert refused(rl, store=None) == 10  # requests with no store (listing, account) count too
    take(rl, 10, user="u2")  # another user is not affected


def test_requests_without_a_store_draw_only_on_the_user(clock: FakeClock) -> None:
    rl = limiter(clock, store_per_second=1, user_per_second=100)
    take(rl, 100, store=None)
    assert refused(rl, store=None) == 100


def test_buckets_refill_over_time_up_to_one_second_of_budget(clock: FakeClock) -> None:
    rl = limiter(clock)
    take(rl, 60)
    refused(rl)
    clock.advance(ms=500)
    take(rl, 30)
    refused(rl)
    clock.advance(ms=100)
    take(rl, 6)
    refused(rl)
    clock.advance(seconds=60)  # idle for a minute: still only one second's worth
    take(rl, 60)
    refused(rl)


def test_refill_of_the_record_bucket(clock: FakeClock) -> None:
    rl = limiter(clock)
    take(rl, 200, record_op=True)
    refused(rl, record_op=True)
    clock.advance(ms=10)
    take(rl, 2, record_op=True)
    refused(rl, record_op=True)


def test_disabled_limiter_lets_everything_through(clock: FakeClock) -> None:
    rl = limiter(clock, enabled=False, store_per_second=1, records_per_second=1, user_per_second=1)
    take(rl, 1000)
    take(rl, 1000, record_op=True)
    take(rl, 1000, store=None)


def test_each_process_enforces_its_share(clock: FakeClock) -> None:
    rl = limiter(clock, processes=2)
    take(rl, 30)
    assert refused(rl) == 60  # the message names the advertised (total) limit
    take(rl, 100, record_op=True)
    assert refused(rl, record_op=True) == 200
    clock.advance(seconds=1)
    take(rl, 30)
    refused(rl)


def test_user_share_per_process(clock: FakeClock) -> None:
    rl = limiter(clock, processes=4, user_per_second=40)
    for i in range(10):
        take(rl, 1, store=f"s{i}")
    assert refused(rl, store="s-next") == 40


def test_advertised_limits(clock: FakeClock) -> None:
    rl = limiter(clock, store_per_second=7, records_per_second=9, user_per_second=11)
    assert rl.limit_for(record_op=True, store_op=True) == 9
    assert rl.limit_for(record_op=False, store_op=True) == 7
    assert rl.limit_for(record_op=False, store_op=False) == 11


# --- through the app ----------------------------------------------------------------------


@dataclass
class Limited:
    client: httpx.AsyncClient
    transport: httpx.ASGITransport
    services: Services
    clock: FakeClock
    store_id: str


@pytest.fixture
async def limited(clock: FakeClock) -> AsyncIterator[Limited]:
    """The in-process app with the default limits switched on, and one store of alice's."""
    settings = Settings(backend="memory", public_url="http://kvbox.test", rate_limits=True)
    svc = build_services(settings, clock=clock)
    await svc.users.create_user("alice", token=ALICE_TOKEN)
    await svc.users.create_user("bob", token=BOB_TOKEN)
    transport = httpx.ASGITransport(app=create_app(services=svc))
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://kvbox.test",
        headers={"Authorization": f"Bearer {ALICE_TOKEN}"},
    ) as client:
        r = await client.post(STORES, params={"name": "busy"}, json={})
        assert r.status_code == 201, r.text
        yield Limited(client, transport, svc, clock, r.json()["data"]["id"])
    await svc.close()


def assert_limited(r: httpx.Response, limit: int) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["x-ratelimit-limit"] == str(limit)
    error = r.json()["error"]
    assert error["type"] == "rate-limit-exceeded"
    assert str(limit) in error["message"]


@pytest.mark.anyio
async def test_store_operations_are_limited_to_60_per_second(limited: Limited) -> None:
    url = f"{STORES}/{limited.store_id}"
    for _ in range(60):
        r = await limited.client.get(url)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit"] == "60"
    assert_limited(await limited.client.get(url), 60)
    assert_limited(await limited.client.get(f"{url}/keys"), 60)  # key listing is a store-level operation
    # Record operations on the same store have their own bucket.
    assert (await limited.client.get(f"{url}/records/missing")).status_code == 404

    limited.clock.advance(seconds=1)
    r = await limited.client.get(url)
    assert r.status_code == 200
    assert r.headers["x-ratelimit-limit"] == "60"


@pytest.mark.anyio
async def test_record_operations_are_limited_to_200_per_second(limited: Limited) -> None:
    records = f"{STORES}/{limited.store_id}/records"
    for i in range(100):
        r = await limited.client.put(f"{records}/k{i}", content=b"v", headers={"Content-Type": "text/plain"})
        assert r.status_code == 201, r.text
        assert r.headers["x-ratelimit-limit"] == "200"
    for i in range(99):
        assert (await limited.client.get(f"{records}/k{i}")).status_code == 200
    r = await limited.client.delete(f"{records}/k0")
    assert (r.status_code, r.headers["x-ratelimit-limit"]) == (204, "200")

    assert_limited(await limited.client.get(f"{records}/k1"), 200)
    assert_limited(await limited.client.put(f"{records}/new", content=b"v"), 200)
    assert (await limited.services.index.get_record(limited.store_id, "new")) is None  # refused before storing
    # Store-level operations still pass.
    assert (await limited.client.get(f"{STORES}/{limited.store_id}")).status_code == 200

    limited.clock.advance(ms=100)  # a tenth of a second refills 20 tokens
    for _ in range(20):
        assert (await limited.client.get(f"{records}/k1")).status_code == 200
    assert_limited(await limited.client.get(f"{records}/k1"), 200)


@pytest.mark.anyio
async def test_stores_addressed_by_name_are_limited_per_owner(limited: Limited) -> None:
    bob_headers = {"Authorization": f"Bearer {BOB_TOKEN}"}
    assert (await limited.client.post(STORES, params={"name": "busy"}, json={}, headers=bob_headers)).status_code == 201
    for _ in range(60):
        assert (await limited.client.get(f"{STORES}/~busy")).status_code == 200
    assert_limited(await limited.client.get(f"{STORES}/~busy"), 60)
    # Bob's `~busy` is another store.
    assert (await limited.client.get(f"{STORES}/~busy", headers=bob_headers)).status_code == 200


@pytest.mark.anyio
async def test_every_response_carries_the_limit_header(limited: Limited) -> None:
    store = f"{STORES}/{limited.store_id}"
    cases = [
        ("GET", STORES, ALICE_TOKEN, 200, "4000"),
        ("GET", "/v2/users/me", ALICE_TOKEN, 200, "4000"),
        ("GET", "/health", None, 200, "4000"),
        ("GET", "/v2/no-such-route", ALICE_TOKEN, 404, "4000"),
        ("GET", f"{store}/records/missing", ALICE_TOKEN, 404, "200"),
        ("GET", f"{STORES}/no-such-store", ALICE_TOKEN, 404, "60"),
        ("GET", store, BOB_TOKEN, 403, "60"),
        ("DELETE", f"{store}/records/x", None, 401, "200"),
        ("PATCH", store, ALICE_TOKEN, 405, "60"),
    ]
    async with httpx.AsyncClient(transport=limited.transport, base_url="http://kvbox.test") as bare:
        for method, url, token, status, limit in cases:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            r = await bare.request(method, url, headers=headers)
            assert r.status_code == status, (method, url, r.text)
            assert r.headers.get("x-ratelimit-limit") == limit, (method, url)


@pytest.mark.anyio
async def test_the_user_limit_applies_across_stores(clock: FakeClock) -> None:
    settings = Settings(backend="memory", public_url="http://kvbox.test", rate_limits=True, rate_limit_user=5)
    svc = build_services(settings, clock=clock)
    await svc.users.create_user("alice", token=ALICE_TOKEN)
    app = create_app(services=svc)
    headers = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kvbox.test") as client:
            for i in range(5):
                r = await client.post(STORES, params={"name": f"s{i}"}, json={}, headers=headers)
                assert r.status_code == 201
            assert_limited(await client.get(STORES, headers=headers), 5)
            clock.advance(seconds=1)
            assert (await client.get(STORES, headers=headers)).status_code == 200
    finally:
        await svc.close()


@pytest.mark.anyio
async def test_a_per_user_429_advertises_the_per_user_limit(clock: FakeClock) -> None:
    """A store route usually advertises the per-store limit; refused by the user's budget, it
    names the limit that was hit."""
    settings = Settings(backend="memory", public_url="http://kvbox.test", rate_limits=True, rate_limit_user=5)
    svc = build_services(settings, clock=clock)
    await svc.users.create_user("alice", token=ALICE_TOKEN)
    headers = {"Authorization": f"Bearer {ALICE_TOKEN}"}
    try:
        transport = httpx.ASGITransport(app=create_app(services=svc))
        async with httpx.AsyncClient(transport=transport, base_url="http://kvbox.test", headers=headers) as client:
            r = await client.post(STORES, params={"name": "s"}, json={})
            store = r.json()["data"]["id"]
            for _ in range(4):
                r = await client.get(f"{STORES}/{store}")
                assert (r.status_code, r.headers["x-ratelimit-limit"]) == (200, "60")
            assert_limited(await client.get(f"{STORES}/{store}"), 5)
            assert_limited(await client.get(f"{STORES}/{store}/records/k"), 5)
    finally:
        await svc.close()
