"""`/health` says the process is up; `/health/ready` says its index and blob store answer."""

from __future__ import annotations

import asyncio

import pytest

from conftest import Api
from kvbox.core.errors import ServiceUnavailableError, StorageError
from kvbox.service.readiness import Readiness

pytestmark = pytest.mark.anyio


async def test_ready_names_each_passing_check(api: Api) -> None:
    r = await api.client.get("/health/ready")
    assert r.status_code == 200
    assert r.json() == {"data": {"status": "ok", "checks": {"index": "ok", "blobStore": "ok"}}}
    assert (await api.client.head("/health/ready")).status_code == 200


async def test_a_failing_index_makes_the_server_unready_but_alive(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async def down() -> None:
        raise StorageError("The index failed to answer: connection refused")

    monkeypatch.setattr(api.services.index, "ping", down)
    api.services.readiness = Readiness(api.services.index, api.services.blobs)
    r = await api.client.get("/health/ready")
    assert r.status_code == 503
    error = r.json()["error"]
    assert error["type"] == ServiceUnavailableError.type
    assert "index" in error["message"] and "connection refused" in error["message"]
    assert error["data"]["checks"]["blobStore"] == "ok"
    assert "connection refused" in error["data"]["checks"]["index"]
    assert (await api.client.get("/health")).status_code == 200
    assert (await api.client.head("/health/ready")).status_code == 503


async def test_a_blob_store_that_does_not_answer_in_time_fails_its_check(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hang() -> None:
        await asyncio.sleep(30)

    monkeypatch.setattr(api.services.blobs, "ping", hang)
    api.services.readiness = Readiness(api.services.index, api.services.blobs, timeout_s=0.05)
    r = await api.client.get("/health/ready")
    assert r.status_code == 503
    assert r.json()["error"]["data"]["checks"] == {"index": "ok", "blobStore": "no answer within 0.05 s"}


async def test_the_blob_store_check_leaves_nothing_behind(api: Api) -> None:
    before = [i async for i in api.services.blobs.list_ids(older_than_ms=1 << 62)]
    for _ in range(3):
        assert (await api.client.get("/health/ready")).status_code == 200
    assert [i async for i in api.services.blobs.list_ids(older_than_ms=1 << 62)] == before
