"""Record lifecycle over HTTP on every backend: per-record expiry, store rules, listing fields,
deleting by prefix, and what the sweeper leaves. Time moves on the fake clock."""

from __future__ import annotations

import io
import zipfile
from typing import Any

import httpx
import pytest

from conftest import Api
from kvbox.core.clock import FakeClock, iso_ms
from kvbox.service.container import Services

pytestmark = pytest.mark.anyio

STORES = "/v2/key-value-stores"
S = 1000
BIG = b"B" * 4096  # above the fixture's inline threshold: kept as a blob


def rec_url(store_id: str, key: str = "") -> str:
    return f"{STORES}/{store_id}/records" + (f"/{key}" if key else "")


def clock_of(api: Api) -> FakeClock:
    clock = api.services.clock
    assert isinstance(clock, FakeClock)
    return clock


async def put(api: Api, store_id: str, key: str, body: bytes = b"v", **params: str) -> httpx.Response:
    return await api.client.put(
        rec_url(store_id, key), content=body, params=params, headers={**api.auth(), "Content-Type": "text/plain"}
    )


async def get(api: Api, store_id: str, key: str, method: str = "GET") -> httpx.Response:
    return await api.client.request(method, rec_url(store_id, key), headers=api.auth())


async def listing(api: Api, store_id: str, **params: str) -> list[dict[str, Any]]:
    r = await api.client.get(f"{STORES}/{store_id}/keys", params=params, headers=api.auth())
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["data"]["items"]
    return items


async def keys(api: Api, store_id: str, **params: str) -> list[str]:
    return [item["key"] for item in await listing(api, store_id, **params)]


async def zip_keys(api: Api, store_id: str) -> list[str]:
    r = await api.client.get(rec_url(store_id), headers=api.auth())
    assert r.status_code == 200
    return zipfile.ZipFile(io.BytesIO(r.content)).namelist()


async def set_rules(api: Api, store_id: str, rules: Any) -> httpx.Response:
    return await api.client.put(f"{STORES}/{store_id}", json={"recordExpiry": rules}, headers=api.auth())


async def store_of(api: Api, store_id: str) -> dict[str, Any]:
    r = await api.client.get(f"{STORES}/{store_id}", headers=api.auth())
    assert r.status_code == 200
    data: dict[str, Any] = r.json()["data"]
    return data


async def assert_gone(api: Api, store_id: str, key: str) -> None:
    for method in ("GET", "HEAD"):
        r = await get(api, store_id, key, method)
        assert r.status_code == 404, (method, r.status_code)
    assert (await get(api, store_id, key)).json()["error"]["type"] == "record-not-found"
    assert key not in await keys(api, store_id)
    assert key not in await zip_keys(api, store_id)


# per-record expiry


async def test_a_record_with_expires_in_is_gone_at_its_instant(api: Api) -> None:
    store = await api.create_store("cache")
    clock = clock_of(api)
    start = clock.now_ms()
    assert (await put(api, store["id"], "page-123", b"<html>", expiresIn="3600")).status_code == 201
    want = iso_ms(start + 3600 * S)
    for method in ("GET", "HEAD"):
        r = await get(api, store["id"], "page-123", method)
        assert r.status_code == 200 and r.headers["kvbox-expires-at"] == want
    assert "Kvbox-Expires-At" in r.headers["access-control-expose-headers"]
    assert (await listing(api, store["id"]))[0]["expiresAt"] == want
    clock.advance(ms=3600 * S - 1)
    assert (await get(api, store["id"], "page-123")).status_code == 200
    clock.advance(ms=1)
    await assert_gone(api, store["id"], "page-123")
    clock.advance(days=1)
    await assert_gone(api, store["id"], "page-123")  # and it never comes back


async def test_expires_at_sets_the_instant_and_a_plain_write_clears_it(api: Api) -> None:
    store = await api.create_store("cache")
    clock = clock_of(api)
    at = clock.now_ms() + 90 * S
    assert (await put(api, store["id"], "k", expiresAt=iso_ms(at))).status_code == 201
    assert (await get(api, store["id"], "k")).headers["kvbox-expires-at"] == iso_ms(at)
    assert (await put(api, store["id"], "k", b"again")).status_code == 201  # a PUT replaces the expiry too
    r = await get(api, store["id"], "k")
    assert "kvbox-expires-at" not in r.headers
    assert (await listing(api, store["id"]))[0]["expiresAt"] is None
    clock.advance(seconds=100)
    assert (await get(api, store["id"], "k")).content == b"again"


async def test_the_read_cache_never_serves_an_expired_record(api: Api) -> None:
    store = await api.create_store("cache")
    assert (await put(api, store["id"], "k", expiresIn="5")).status_code == 201
    for _ in range(3):  # read it into every cache there is
        assert (await get(api, store["id"], "k")).status_code == 200
    clock_of(api).advance(seconds=5)
    assert (await get(api, store["id"], "k")).status_code == 404


BAD_EXPIRY = [
    {"expiresIn": "0"},
    {"expiresIn": "-5"},
    {"expiresIn": "abc"},
    {"expiresIn": "1.5"},
    {"expiresIn": ""},
    {"expiresIn": "315360001"},
    {"expiresAt": "2020-01-01T00:00:00.000Z"},
    {"expiresAt": "not a date"},
    {"expiresIn": "60", "expiresAt": "2099-01-01T00:00:00.000Z"},
]


@pytest.mark.parametrize("params", BAD_EXPIRY, ids=lambda p: "&".join(f"{k}={v}" for k, v in p.items()))
async def test_bad_expiry_is_invalid_value_and_stores_nothing(api: Api, params: dict[str, str]) -> None:
    store = await api.create_store("cache")
    assert (await put(api, store["id"], "kept", b"old")).status_code == 201
    for key in ("new", "kept"):
        r = await put(api, store["id"], key, BIG, **params)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["type"] == "invalid-value"
    assert (await get(api, store["id"], "new")).status_code == 404
    assert (await get(api, store["id"], "kept")).content == b"old"
    assert (await store_of(api, store["id"]))["stats"]["writeCount"] == 1


# store rules


async def test_rules_expire_records_written_before_and_after_the_longest_prefix_wins(api: Api) -> None:
    store = await api.create_store("rules")
    clock = clock_of(api)
    t0 = clock.now_ms()
    for key in ("tmp-a", "tmp-keep-a", "other"):
        assert (await put(api, store["id"], key)).status_code == 201
    assert (await put(api, store["id"], "tmp-own", expiresIn="1000")).status_code == 201
    rules = [{"prefix": "tmp-", "expireAfterSecs": 60}, {"prefix": "tmp-keep-", "expireAfterSecs": 600}]
    r = await set_rules(api, store["id"], rules)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["recordExpiry"] == rules  # shortest prefix first
    assert (await store_of(api, store["id"]))["recordExpiry"] == rules
    items = {i["key"]: i["expiresAt"] for i in await listing(api, store["id"])}
    assert items == {
        "other": None,
        "tmp-a": iso_ms(t0 + 60 * S),
        "tmp-keep-a": iso_ms(t0 + 600 * S),
        "tmp-own": iso_ms(t0 + 1000 * S),  # the record's own expiry wins
    }
    assert (await get(api, store["id"], "tmp-a")).headers["kvbox-expires-at"] == iso_ms(t0 + 60 * S)
    clock.advance(seconds=60)
    await assert_gone(api, store["id"], "tmp-a")
    assert await keys(api, store["id"]) == ["other", "tmp-keep-a", "tmp-own"]
    assert (await put(api, store["id"], "tmp-a", b"fresh")).status_code == 201  # a new write starts afresh
    assert (await get(api, store["id"], "tmp-a")).content == b"fresh"


async def test_a_rule_change_takes_effect_at_once_and_never_brings_a_record_back(api: Api) -> None:
    store = await api.create_store("rules")
    clock = clock_of(api)
    assert (await put(api, store["id"], "old")).status_code == 201
    assert (await get(api, store["id"], "old")).status_code == 200  # cached
    clock.advance(seconds=120)
    assert (await put(api, store["id"], "young")).status_code == 201
    assert (await set_rules(api, store["id"], [{"prefix": "", "expireAfterSecs": 60}])).status_code == 200
    await assert_gone(api, store["id"], "old")
    assert (await get(api, store["id"], "young")).status_code == 200
    assert (await set_rules(api, store["id"], [])).status_code == 200
    assert (await store_of(api, store["id"]))["recordExpiry"] == []
    await assert_gone(api, store["id"], "old")  # expired while the rule stood: gone for good
    r = await get(api, store["id"], "young")
    assert r.status_code == 200 and "kvbox-expires-at" not in r.headers
    clock.advance(days=1)
    assert (await get(api, store["id"], "young")).status_code == 200
    # Once the sweeper went through the store, the replaced rules are forgotten.
    retired = await api.services.index.get_store(store["id"])
    assert retired is not None and len(retired.record_expiry.retired) == 1
    await api.services.housekeeper.sweeper.sweep_all()
    swept = await api.services.index.get_store(store["id"])
    assert swept is not None and swept.record_expiry.retired == () and swept.record_count == 1
    await assert_gone(api, store["id"], "old")


BAD_RULES: list[Any] = [
    "1d",
    {"prefix": "", "expireAfterSecs": 60},
    [{"prefix": "", "expireAfterSecs": 0}],
    [{"prefix": "", "expireAfterSecs": -5}],
    [{"prefix": "", "expireAfterSecs": "abc"}],
    [{"prefix": "", "expireAfterSecs": 315360001}],
    [{"prefix": f"p{i}", "expireAfterSecs": 60} for i in range(21)],
    [{"prefix": "a", "expireAfterSecs": 60}, {"prefix": "a", "expireAfterSecs": 120}],
    [{"prefix": "bad/key", "expireAfterSecs": 60}],
]


@pytest.mark.parametrize("rules", BAD_RULES, ids=range(len(BAD_RULES)))
async def test_bad_rules_are_invalid_value_and_change_nothing(api: Api, rules: Any) -> None:
    store = await api.create_store("rules")
    good = [{"prefix": "x", "expireAfterSecs": 30}]
    assert (await set_rules(api, store["id"], good)).status_code == 200
    before = await store_of(api, store["id"])
    r = await api.client.put(
        f"{STORES}/{store['id']}", json={"recordExpiry": rules, "title": "changed"}, headers=api.auth()
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid-value", r.text
    after = await store_of(api, store["id"])
    assert after["recordExpiry"] == good and after["title"] == before["title"]


async def test_rules_need_manage(api: Api) -> None:
    store = await api.create_store("rules")
    services: Services = api.services
    from kvbox.core.models import Grant, Permission

    bob = await services.users.find_user("bob")
    await services.index.set_grant(Grant(store["id"], bob.id, Permission.WRITE, 0))
    r = await api.client.put(
        f"{STORES}/{store['id']}", json={"recordExpiry": []}, headers=api.auth("bob-token-0123456789ab")
    )
    assert r.status_code == 403


# listing fields


async def test_listing_items_carry_the_record_fields(api: Api) -> None:
    store = await api.create_store("fields")
    clock = clock_of(api)
    r = await api.client.put(
        rec_url(store["id"], "doc"), json={"a": 1}, headers={**api.auth(), "Content-Type": "application/json"}
    )
    assert r.status_code == 201
    written = clock.now_ms()
    head = await get(api, store["id"], "doc", "HEAD")
    (item,) = await listing(api, store["id"])
    assert item["contentType"] == "application/json"
    assert item["modifiedAt"] == iso_ms(written)
    assert item["etag"] == head.headers["etag"] and item["etag"].startswith('"')
    assert item["expiresAt"] is None
    assert set(item) == {"key", "size", "recordPublicUrl", "contentType", "modifiedAt", "etag", "expiresAt"}


# deleting by prefix


async def test_delete_by_prefix_is_one_operation(api: Api) -> None:
    store = await api.create_store("tmp")
    for key in ("tmp-1", "tmp-2", "tmp-3", "keep"):
        assert (await put(api, store["id"], key, BIG if key == "tmp-2" else b"v")).status_code == 201
    assert (await put(api, store["id"], "tmp-old", expiresIn="1")).status_code == 201
    clock_of(api).advance(seconds=1)
    r = await api.client.delete(rec_url(store["id"]), params={"prefix": "tmp-"}, headers=api.auth())
    assert r.status_code == 200, r.text
    assert r.json() == {"data": {"deletedCount": 3}}  # the expired one is not counted
    for key in ("tmp-1", "tmp-2", "tmp-3"):
        await assert_gone(api, store["id"], key)
    assert await keys(api, store["id"]) == ["keep"]
    assert (await put(api, store["id"], "tmp-1", b"after")).status_code == 201  # written after: kept
    assert (await get(api, store["id"], "tmp-1")).content == b"after"

    await reclaim_everything(api.services)
    data = await store_of(api, store["id"])
    assert data["recordCount"] == 2 and data["stats"]["storageBytes"] == len(b"v") + len(b"after")
    assert await blob_count(api.services) == 0


async def test_delete_by_prefix_needs_the_parameter_and_empty_means_all(api: Api) -> None:
    store = await api.create_store("tmp")
    for key in ("a", "b"):
        assert (await put(api, store["id"], key)).status_code == 201
    r = await api.client.delete(rec_url(store["id"]), headers=api.auth())
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid-parameter"
    assert await keys(api, store["id"]) == ["a", "b"]
    r = await api.client.delete(rec_url(store["id"]), params={"prefix": ""}, headers=api.auth())
    assert r.json() == {"data": {"deletedCount": 2}}
    assert await keys(api, store["id"]) == []
    r = await api.client.delete(rec_url("nosuchstore000000"), params={"prefix": ""}, headers=api.auth())
    assert r.status_code == 404


# the sweeper


async def reclaim_everything(services: Services) -> None:
    """What housekeeping does over time, done now: purge deleted prefixes, sweep expired records."""
    for _ in range(100):
        await services.housekeeper.reclaim()
        if not await services.index.purge_pending():
            break
    assert not await services.index.purge_pending()
    await services.housekeeper.sweeper.sweep_all()


async def blob_count(services: Services) -> int:
    later = services.clock.now_ms() + 86_400_000
    return len([b async for b in services.blobs.list_ids(older_than_ms=later)])


async def test_housekeeping_walks_a_store_with_rules_once_per_sweep_interval(api: Api) -> None:
    store = await api.create_store("paced")
    clock = clock_of(api)
    assert (await set_rules(api, store["id"], [{"prefix": "", "expireAfterSecs": 10}])).status_code == 200
    assert (await put(api, store["id"], "a")).status_code == 201
    clock.advance(seconds=10)
    assert await api.services.housekeeper.sweep_records() == 1
    assert (await put(api, store["id"], "b")).status_code == 201
    clock.advance(seconds=10)
    assert await api.services.housekeeper.sweep_records() == 0  # walked 10 s ago
    clock.advance(seconds=api.services.settings.sweep_interval)
    assert await api.services.housekeeper.sweep_records() == 1
    assert (await store_of(api, store["id"]))["recordCount"] == 0


async def test_the_sweeper_reclaims_expired_records_and_the_counters_end_right(api: Api) -> None:
    store = await api.create_store("sweep")
    clock = clock_of(api)
    for i in range(5):
        assert (await put(api, store["id"], f"own-{i}", BIG, expiresIn=str(10 + i))).status_code == 201
        assert (await put(api, store["id"], f"rule-{i}", BIG)).status_code == 201
    assert (await put(api, store["id"], "kept", b"12345")).status_code == 201
    assert (await set_rules(api, store["id"], [{"prefix": "rule-", "expireAfterSecs": 30}])).status_code == 200
    assert await blob_count(api.services) == 10
    clock.advance(seconds=12)
    await reclaim_everything(api.services)
    data = await store_of(api, store["id"])
    assert data["recordCount"] == 8  # own-3 and own-4 are not due yet
    clock.advance(seconds=30)
    await reclaim_everything(api.services)
    data = await store_of(api, store["id"])
    assert data["recordCount"] == 1 and data["stats"]["storageBytes"] == 5
    assert await blob_count(api.services) == 0
    assert await keys(api, store["id"]) == ["kept"]


async def test_a_crash_between_rows_and_blobs_leaves_nothing_behind(api: Api) -> None:
    store = await api.create_store("crash")
    for i in range(3):
        assert (await put(api, store["id"], f"e{i}", BIG, expiresIn="1")).status_code == 201
        assert (await put(api, store["id"], f"p{i}", BIG)).status_code == 201
    clock_of(api).advance(seconds=1)
    index = api.services.index
    # The rows' deletion commits, then the process dies before deleting the blobs.
    assert (await index.reclaim_expired(now_ms=clock_of(api).now_ms(), max_rows=10))[0] == 3
    assert (
        await api.client.delete(rec_url(store["id"]), params={"prefix": "p"}, headers=api.auth())
    ).status_code == 200
    while await index.purge_pending():
        await index.purge_deleted(max_rows=2)
    assert await blob_count(api.services) == 6
    # The next process's first pass finishes the job.
    assert await api.services.housekeeper.sweeper.drop_freed(batch=4) == 6
    assert await blob_count(api.services) == 0 and await index.freed_blobs(limit=10) == []
    data = await store_of(api, store["id"])
    assert data["recordCount"] == 0 and data["stats"]["storageBytes"] == 0


async def test_conditional_writes_see_expired_and_deleted_records_as_missing(api: Api) -> None:
    """From its expiry instant (its own, or a rule's) or a delete by prefix on, a record is
    missing for `If-Match` and `If-None-Match: *` too, as for every reader."""
    store = await api.create_store("cas")
    clock = clock_of(api)
    sid = store["id"]
    own = await put(api, sid, "own", expiresIn="10")
    ruled = await put(api, sid, "ruled")
    hidden = await put(api, sid, "tmp-1")
    assert (await set_rules(api, sid, [{"prefix": "ruled", "expireAfterSecs": 5}])).status_code == 200

    def cond(header: str, value: str) -> dict[str, str]:
        return {**api.auth(), "Content-Type": "text/plain", header: value}

    assert (
        await api.client.put(rec_url(sid, "own"), content=b"x", headers=cond("If-None-Match", "*"))
    ).status_code == 412
    clock.advance(seconds=10)
    r = await api.client.request("DELETE", f"{rec_url(sid)}?prefix=tmp-", headers=api.auth())
    assert r.status_code == 200 and r.json()["data"]["deletedCount"] == 1
    for key, old in (("own", own), ("ruled", ruled), ("tmp-1", hidden)):
        etag = old.headers["etag"]
        r = await api.client.put(rec_url(sid, key), content=b"late", headers=cond("If-Match", etag))
        assert r.status_code == 412, key
        r = await api.client.request("DELETE", rec_url(sid, key), headers=cond("If-Match", "*"))
        assert r.status_code == 412, key
        r = await api.client.put(rec_url(sid, key), content=b"new", headers=cond("If-None-Match", "*"))
        assert r.status_code == 201, key
        assert (await get(api, sid, key)).content == b"new"
