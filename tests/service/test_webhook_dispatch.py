"""Webhook delivery on every backend, against an in-process receiver: signed bodies, stable
delivery ids across retries, sequence order, backoff on the fake clock, the delivery log,
and a deployment with the feed off."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from conftest import ALICE_TOKEN, Api
from kvbox.core.clock import FakeClock
from kvbox.core.errors import ChangesDisabledError
from kvbox.core.webhooks import verify
from kvbox.server import create_app, webhook_resource
from kvbox.service.container import Services, build_services
from kvbox.service.dispatcher import LEASE_MS, WebhookDispatcher
from kvbox.service.settings import Settings

pytestmark = pytest.mark.anyio

STORES = "/v2/key-value-stores"
SECRET = "receiver shared secret"


class Receiver:
    """Answers each POST with the next status of `script` (then 200), keeping what it got."""

    def __init__(self, script: list[int]) -> None:
        self.script = list(script)
        self.got: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.got.append(request)
        return httpx.Response(self.script.pop(0) if self.script else 200)


def dispatcher_for(services: Services) -> WebhookDispatcher:
    return WebhookDispatcher(services.index, services.changes.hub, services.clock, services.metrics,
                             allow_private=True, retry_delay_ms=5000, render=webhook_resource(services))  # fmt: skip


async def run_once(d: WebhookDispatcher, receiver: Callable[[httpx.Request], httpx.Response]) -> None:
    """One pass of the dispatcher, as its run loop makes after a change or a second."""
    async with httpx.AsyncClient(transport=httpx.MockTransport(receiver)) as client:
        await d.dispatch_due(client)
        await d.settle()


async def hook(api: Api, store: str, **fields: Any) -> dict[str, Any]:
    # The API refuses internal addresses; the dispatcher under test calls the mock receiver.
    api.services.webhooks.allow_private = True
    r = await api.client.post(f"{STORES}/{store}/webhooks", headers=api.auth(),
                              json={"requestUrl": "http://receiver.test/hook", "secret": SECRET, **fields})  # fmt: skip
    assert r.status_code == 201, r.text
    data: dict[str, Any] = r.json()["data"]
    return data


async def put(api: Api, store: str, key: str) -> None:
    r = await api.client.put(f"{STORES}/{store}/records/{key}", content=b"v", headers=api.auth())
    assert r.status_code in (200, 201)


async def test_a_receiver_that_fails_twice_gets_the_same_delivery_three_times(api: Api, clock: FakeClock) -> None:
    store = (await api.create_store("hooked"))["id"]
    created = await hook(api, store)
    await put(api, store, "k")
    receiver = Receiver([500, 503])
    d = dispatcher_for(api.services)
    await run_once(d, receiver)
    await run_once(d, receiver)  # the retry is not due yet
    assert len(receiver.got) == 1
    clock.advance(seconds=5)
    await run_once(d, receiver)
    clock.advance(seconds=10)
    await run_once(d, receiver)
    await run_once(d, receiver)
    assert len(receiver.got) == 3
    ids = {r.headers["kvbox-delivery-id"] for r in receiver.got}
    assert len(ids) == 1 and {r.content for r in receiver.got} == {receiver.got[0].content}
    first = receiver.got[0]
    assert first.headers["kvbox-webhook-id"] == created["id"]
    assert verify(SECRET, first.headers["kvbox-signature"], first.content, now_s=0, tolerance_s=0)
    assert not verify("wrong", first.headers["kvbox-signature"], first.content, now_s=0, tolerance_s=0)
    body = json.loads(first.content)
    assert body["eventType"] == "RECORD.CREATED" and body["userId"] == body["resource"]["userId"]
    assert body["eventData"] | {"etag": None} == {"storeId": store, "sequence": 1, "key": "k", "etag": None,
                                                  "size": 1, "contentType": "application/octet-stream"}  # fmt: skip
    assert body["resource"]["id"] == store and body["resource"]["name"] == "hooked"
    r = await api.client.get(f"{STORES}/{store}/webhooks/{created['id']}/deliveries", headers=api.auth())
    log = r.json()["data"]["items"]
    assert [(a["attempt"], a["status"], a["responseStatus"]) for a in log] == [
        (3, "SUCCEEDED", 200), (2, "FAILED", 503), (1, "FAILED", 500)]  # fmt: skip
    assert {a["deliveryId"] for a in log} == ids and log[1]["error"] == "HTTP 503"


async def test_deliveries_keep_sequence_order_and_follow_the_filter(api: Api, clock: FakeClock) -> None:
    store = (await api.create_store())["id"]
    await hook(api, store, keyPrefix="in-", eventTypes=["RECORD.CREATED", "RECORD.DELETED"])
    for key in ("in-a", "out-b", "in-c"):
        await put(api, store, key)
    await put(api, store, "in-a")  # an update: not asked for
    await api.client.delete(f"{STORES}/{store}/records/in-c", headers=api.auth())
    receiver = Receiver([500])  # the first fails: nothing after it goes before it
    d = dispatcher_for(api.services)
    await run_once(d, receiver)
    clock.advance(seconds=6)
    await run_once(d, receiver)
    sent = [(json.loads(r.content)["eventType"], json.loads(r.content)["eventData"]["key"]) for r in receiver.got]
    assert sent == [("RECORD.CREATED", "in-a"), ("RECORD.CREATED", "in-a"), ("RECORD.CREATED", "in-c"),
                    ("RECORD.DELETED", "in-c")]  # fmt: skip


async def test_a_disabled_webhook_gets_nothing_and_skips_what_happened_meanwhile(api: Api) -> None:
    store = (await api.create_store())["id"]
    created = await hook(api, store, isEnabled=False)
    await put(api, store, "while-off")
    receiver = Receiver([])
    d = dispatcher_for(api.services)
    await run_once(d, receiver)
    r = await api.client.put(f"{STORES}/{store}/webhooks/{created['id']}", json={"isEnabled": True}, headers=api.auth())
    assert r.status_code == 200
    await put(api, store, "after")
    await run_once(d, receiver)
    assert [json.loads(r.content)["eventData"]["key"] for r in receiver.got] == ["after"]


async def test_the_feed_can_be_off(tmp_path: Path, clock: FakeClock) -> None:
    settings = Settings(backend="sqlite", data_dir=tmp_path / "data", changes=False, rate_limits=False)
    services = build_services(settings, clock=clock)
    await services.users.create_user("alice", token=ALICE_TOKEN)
    try:
        transport = httpx.ASGITransport(app=create_app(services=services))
        async with httpx.AsyncClient(transport=transport, base_url="http://kvbox.test") as client:
            api = Api(client=client, services=services)
            store = (await api.create_store())["id"]
            await put(api, store, "k")
            for path in ("changes", "webhooks"):
                r = await client.get(f"{STORES}/{store}/{path}", headers=api.auth())
                assert r.status_code == 404 and r.json()["error"]["type"] == ChangesDisabledError.type
            page = await services.index.list_changes(store, after=0, limit=10)
            assert page is not None and page.items == [] and page.latest == 0
    finally:
        await services.close()


class Killed(BaseException):
    """The process dies: nothing after this point of its work happens."""


class DyingIndex:
    """A node's view of the shared index while it is killed: a dead process never releases
    its lease (everything else reaches the shared index as it would)."""

    def __init__(self, index: Any) -> None:
        self._index = index

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)

    async def release_webhook(self, webhook_id: str, *, owner: str) -> None:
        return None


async def test_a_node_killed_mid_delivery_passes_the_delivery_to_another_once_its_lease_lapses(
    api: Api, clock: FakeClock
) -> None:
    store = (await api.create_store("hooked"))["id"]
    created = await hook(api, store)
    await put(api, store, "k")
    services = api.services
    a = WebhookDispatcher(DyingIndex(services.index), services.changes.hub, services.clock, services.metrics,
                          allow_private=True, retry_delay_ms=5000, render=webhook_resource(services))  # fmt: skip
    seen_by_a: list[httpx.Request] = []

    def dies_while_posting(request: httpx.Request) -> httpx.Response:
        seen_by_a.append(request)
        raise Killed()

    await run_once(a, dies_while_posting)
    assert len(seen_by_a) == 1  # the delivery was persisted, then attempted, then the node died
    b = dispatcher_for(services)
    receiver = Receiver([])
    await run_once(b, receiver)
    assert receiver.got == []  # the dead node's lease still holds
    clock.advance(ms=LEASE_MS + 1)
    await run_once(b, receiver)
    assert len(receiver.got) == 1
    assert receiver.got[0].headers["kvbox-delivery-id"] == seen_by_a[0].headers["kvbox-delivery-id"]
    assert receiver.got[0].content == seen_by_a[0].content
    r = await api.client.get(f"{STORES}/{store}/webhooks/{created['id']}/deliveries", headers=api.auth())
    log = r.json()["data"]["items"]
    assert [(a["status"], a["responseStatus"]) for a in log] == [("SUCCEEDED", 200)]
    await run_once(b, receiver)
    assert len(receiver.got) == 1  # delivered once, not again


async def test_a_hanging_receiver_holds_up_neither_writes_nor_other_webhooks(api: Api) -> None:
    store = (await api.create_store("hooked"))["id"]
    await hook(api, store, requestUrl="http://hangs.test/hook")
    await hook(api, store, requestUrl="http://answers.test/hook")
    hanging = asyncio.Event()
    answered: list[httpx.Request] = []

    async def receivers(request: httpx.Request) -> httpx.Response:
        if request.url.host == "hangs.test":
            hanging.set()
            await asyncio.Event().wait()  # never answers (until the attempt times out)
        answered.append(request)
        return httpx.Response(204)

    d = dispatcher_for(api.services)
    async with httpx.AsyncClient(transport=httpx.MockTransport(receivers)) as client:
        await put(api, store, "k1")
        await d.dispatch_due(client)
        with anyio.fail_after(30):
            await hanging.wait()
            while not answered:
                await asyncio.sleep(0.01)
        # While the first receiver hangs: writes go on, and so do the other webhook's deliveries.
        await put(api, store, "k2")
        with anyio.fail_after(30):
            while len(answered) < 2:
                await d.dispatch_due(client)
                await asyncio.sleep(0.01)
        assert [json.loads(r.content)["eventData"]["key"] for r in answered] == ["k1", "k2"]
        for task in list(d._active.values()):
            task.cancel()
        await d.settle()
