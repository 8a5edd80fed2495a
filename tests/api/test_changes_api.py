"""The change feed and webhook endpoints over HTTP on every backend: what each record change
shows, cursors and long-polls, retention, webhook management and its input checks."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from conftest import BOB_TOKEN, Api
from kvbox.core.clock import FakeClock
from kvbox.core.errors import ChangesExpiredError, InvalidParameterError, InvalidValueError, WebhookNotFoundError

pytestmark = pytest.mark.anyio

STORES = "/v2/key-value-stores"
PUBLIC_URL = "http://93.184.216.34/hook"  # a public address literal: no DNS needed


async def put(api: Api, store_id: str, key: str, body: bytes = b"v") -> httpx.Response:
    r = await api.client.put(f"{STORES}/{store_id}/records/{key}", content=body,
                             headers={**api.auth(), "Content-Type": "text/plain"})  # fmt: skip
    assert r.status_code in (200, 201), r.text
    return r


async def changes(api: Api, store_id: str, status: int = 200, **params: Any) -> Any:
    r = await api.client.get(f"{STORES}/{store_id}/changes", params=params, headers=api.auth())
    assert r.status_code == status, r.text
    return r.json()["data"] if status == 200 else r.json()["error"]


async def test_each_record_change_shows_in_order(api: Api) -> None:
    store = (await api.create_store("feed"))["id"]
    first = await put(api, store, "a", b"one")
    await put(api, store, "a", b"two!")
    await api.client.delete(f"{STORES}/{store}/records/a", headers=api.auth())
    await api.client.delete(f"{STORES}/{store}/records/never", headers=api.auth())
    data = await changes(api, store)
    assert [(c["sequence"], c["eventType"], c["key"]) for c in data["items"]] == [
        (1, "RECORD.CREATED", "a"), (2, "RECORD.UPDATED", "a"), (3, "RECORD.DELETED", "a")]  # fmt: skip
    assert data["lastSequence"] == 3
    created = data["items"][0]
    assert created["etag"] == first.headers["etag"]
    assert (created["size"], created["contentType"]) == (3, "text/plain")
    assert created["createdAt"].endswith("Z")
    assert data["items"][2] | {"createdAt": None} == {"sequence": 3, "eventType": "RECORD.DELETED", "key": "a",
        "etag": None, "size": None, "contentType": None, "createdAt": None}  # fmt: skip
    page = await changes(api, store, after=1, limit=1)
    assert [c["sequence"] for c in page["items"]] == [2] and page["lastSequence"] == 2
    assert await changes(api, store, after=3) == {"items": [], "lastSequence": 3}


async def test_a_delete_by_prefix_shows_a_deletion_per_record(api: Api) -> None:
    store = (await api.create_store())["id"]
    for key in ("p-1", "p-2", "q"):
        await put(api, store, key)
    r = await api.client.delete(f"{STORES}/{store}/records", params={"prefix": "p-"}, headers=api.auth())
    assert r.json()["data"]["deletedCount"] == 2
    await api.services.housekeeper.reclaim()
    data = await changes(api, store, after=3)
    assert sorted((c["eventType"], c["key"]) for c in data["items"]) == [
        ("RECORD.DELETED", "p-1"), ("RECORD.DELETED", "p-2")]  # fmt: skip


async def test_expiry_shows_once_the_sweeper_reclaims(api: Api, clock: FakeClock) -> None:
    store = (await api.create_store())["id"]
    r = await api.client.put(f"{STORES}/{store}/records/t", content=b"x", params={"expiresIn": "5"},
                             headers=api.auth())  # fmt: skip
    assert r.status_code in (200, 201)
    clock.advance(seconds=6)
    await api.services.housekeeper.sweeper.sweep_all()
    data = await changes(api, store, after=1)
    assert [(c["eventType"], c["key"]) for c in data["items"]] == [("RECORD.EXPIRED", "t")]


async def test_a_long_poll_returns_at_the_first_change(api: Api) -> None:
    store = (await api.create_store())["id"]
    started = time.monotonic()
    waiting = asyncio.ensure_future(changes(api, store, after=0, wait=20))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    await put(api, store, "k")
    data = await asyncio.wait_for(waiting, 5)
    assert [c["key"] for c in data["items"]] == ["k"] and time.monotonic() - started < 5


async def test_a_long_poll_without_changes_answers_empty_after_the_wait(api: Api) -> None:
    store = (await api.create_store())["id"]
    await put(api, store, "k")
    started = time.monotonic()
    assert await changes(api, store, after=1, wait=1) == {"items": [], "lastSequence": 1}
    assert 0.9 < time.monotonic() - started < 5


async def test_a_cursor_that_fell_off_the_log_is_gone(api: Api, clock: FakeClock) -> None:
    store = (await api.create_store())["id"]
    await put(api, store, "old")
    clock.advance(days=8)
    await put(api, store, "new")
    assert await api.services.housekeeper.trim_changes() == 1
    error = await changes(api, store, 410, after=0)
    assert error["type"] == ChangesExpiredError.type
    assert [c["key"] for c in (await changes(api, store, after=1))["items"]] == ["new"]


@pytest.mark.parametrize(
    "params", [{"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"wait": "soon"}, {"after": "9" * 40}]
)
async def test_bad_feed_parameters_are_refused(api: Api, params: dict[str, str]) -> None:
    store = (await api.create_store())["id"]
    assert (await changes(api, store, 400, **params))["type"] == InvalidParameterError.type


async def test_readers_read_the_feed_and_only_managers_see_webhooks(api: Api) -> None:
    store = (await api.create_store("shared"))["id"]
    r = await api.client.put(f"{STORES}/{store}/grants/bob", json={"permission": "READ"}, headers=api.auth())
    assert r.status_code in (200, 201, 204), r.text
    bob = api.auth(BOB_TOKEN)
    assert (await api.client.get(f"{STORES}/{store}/changes", headers=bob)).status_code == 200
    assert (await api.client.get(f"{STORES}/{store}/webhooks", headers=bob)).status_code == 403


async def create_hook(api: Api, store: str, status: int = 201, **fields: Any) -> Any:
    r = await api.client.post(f"{STORES}/{store}/webhooks", json={"requestUrl": PUBLIC_URL, **fields},
                              headers=api.auth())  # fmt: skip
    assert r.status_code == status, r.text
    return r.json()["data"] if status == 201 else r.json()["error"]


async def test_webhooks_are_managed_and_never_show_their_secret(api: Api) -> None:
    store = (await api.create_store())["id"]
    hook = await create_hook(api, store, eventTypes=["RECORD.CREATED"], keyPrefix="in/")
    assert len(hook.pop("secret")) >= 32
    assert hook | {"id": None, "createdAt": None, "modifiedAt": None} == {
        "id": None, "requestUrl": PUBLIC_URL, "eventTypes": ["RECORD.CREATED"], "keyPrefix": "in/",
        "isEnabled": True, "createdAt": None, "modifiedAt": None}  # fmt: skip
    given = await create_hook(api, store, secret="my own secret value")
    assert "secret" not in given and given["eventTypes"] == ["RECORD.CREATED", "RECORD.UPDATED",
        "RECORD.DELETED", "RECORD.EXPIRED"]  # fmt: skip
    base = f"{STORES}/{store}/webhooks"
    listed = (await api.client.get(base, headers=api.auth())).json()["data"]["items"]
    assert sorted(h["id"] for h in listed) == sorted([hook["id"], given["id"]])
    r = await api.client.put(f"{base}/{hook['id']}", json={"isEnabled": False, "keyPrefix": ""}, headers=api.auth())
    assert r.status_code == 200 and (r.json()["data"]["isEnabled"], r.json()["data"]["keyPrefix"]) == (False, "")
    assert (await api.client.get(f"{base}/{hook['id']}", headers=api.auth())).json()["data"] == r.json()["data"]
    deliveries = await api.client.get(f"{base}/{hook['id']}/deliveries", headers=api.auth())
    assert deliveries.json() == {"data": {"items": []}}
    assert (await api.client.delete(f"{base}/{hook['id']}", headers=api.auth())).status_code == 204
    gone = await api.client.get(f"{base}/{hook['id']}", headers=api.auth())
    assert gone.status_code == 404 and gone.json()["error"]["type"] == WebhookNotFoundError.type


@pytest.mark.parametrize(
    "fields",
    [
        {"requestUrl": "ftp://example.com/x"},
        {"requestUrl": "http://127.0.0.1:9/hook"},
        {"requestUrl": "http://10.1.2.3/hook"},
        {"requestUrl": "http://[::1]/hook"},
        {"requestUrl": "http://169.254.169.254/latest"},
        {"requestUrl": "not a url"},
        {"requestUrl": 5},
        {"eventTypes": []},
        {"eventTypes": ["RECORD.MOVED"]},
        {"keyPrefix": 3},
        {"isEnabled": "yes"},
        {"secret": "short"},
    ],
)
async def test_bad_webhooks_are_refused(api: Api, fields: dict[str, Any]) -> None:
    store = (await api.create_store())["id"]
    assert (await create_hook(api, store, 400, **fields))["type"] == InvalidValueError.type
    assert (await api.client.get(f"{STORES}/{store}/webhooks", headers=api.auth())).json()["data"]["items"] == []
