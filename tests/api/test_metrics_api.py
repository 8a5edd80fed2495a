"""`/metrics`: closed unless a metrics token or public access opens it; counters move with requests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import ALICE_TOKEN, Api
from kvbox.core.errors import InsufficientPermissionsError, PageNotFoundError, TokenNotProvidedError
from kvbox.server import create_app
from kvbox.service.container import Services, build_services
from kvbox.service.ratelimit import Limits
from kvbox.service.settings import Settings

pytestmark = pytest.mark.anyio
METRICS_TOKEN = "metrics-secret-0123456789"
RECORD_ROUTE = "/v2/key-value-stores/{store}/records/{key}"


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


async def scrape(api: Api) -> str:
    r = await api.client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    return r.text


@pytest.fixture
async def opened(api: Api) -> AsyncIterator[Api]:
    api.services.settings.metrics_token = METRICS_TOKEN
    yield api


async def test_metrics_are_closed_without_a_token_or_public_access(api: Api) -> None:
    r = await api.client.get("/metrics", headers=api.auth())
    assert r.status_code == 403
    assert r.json()["error"]["type"] == InsufficientPermissionsError.type
    assert "KVBOX_METRICS_TOKEN" in r.json()["error"]["message"]


async def test_only_the_metrics_token_opens_them(opened: Api) -> None:
    r = await opened.client.get("/metrics")
    assert (r.status_code, r.json()["error"]["type"]) == (401, TokenNotProvidedError.type)
    for wrong in (f"Bearer {ALICE_TOKEN}", "Bearer nope", f"Basic {METRICS_TOKEN}", METRICS_TOKEN):
        r = await opened.client.get("/metrics", headers={"Authorization": wrong})
        assert (r.status_code, r.json()["error"]["type"]) == (403, InsufficientPermissionsError.type), wrong
    r = await opened.client.get("/metrics", params={"token": METRICS_TOKEN})
    assert r.status_code == 401  # only the header carries it, never a URL that ends up in logs
    await scrape(opened)


async def test_public_metrics_need_no_token(api: Api) -> None:
    api.services.settings.metrics_public = True
    r = await api.client.get("/metrics")
    assert r.status_code == 200
    assert "kvbox_http_requests_total" in r.text


async def test_turned_off_metrics_are_not_found(services: Services) -> None:
    services.settings.metrics_public = True
    services.metrics.enabled = False
    app = create_app(services=services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kvbox.test") as client:
        r = await client.get("/metrics")
    assert (r.status_code, r.json()["error"]["type"]) == (404, PageNotFoundError.type)


async def test_counters_move_with_requests_by_route_pattern(opened: Api) -> None:
    store = await opened.create_store("metered")
    url = f"/v2/key-value-stores/{store['id']}/records/greeting"
    r = await opened.client.put(url, content=b"x" * 100, headers=opened.auth())
    assert r.status_code == 201
    for _ in range(3):
        assert (await opened.client.get(url, headers=opened.auth())).status_code == 200
    assert (await opened.client.get(url + "-missing", headers=opened.auth())).status_code == 404
    text = await scrape(opened)
    assert sample(text, "kvbox_http_requests_total", route=RECORD_ROUTE, method="GET", status="200") == 3
    assert sample(text, "kvbox_http_requests_total", route=RECORD_ROUTE, method="GET", status="404") == 1
    assert sample(text, "kvbox_http_requests_total", route=RECORD_ROUTE, method="PUT", status="201") == 1
    assert sample(text, "kvbox_http_request_duration_seconds_count", route=RECORD_ROUTE, method="GET") == 4
    assert sample(text, "kvbox_http_request_bytes_total", route=RECORD_ROUTE, method="PUT") == 100
    assert sample(text, "kvbox_http_response_bytes_total", route=RECORD_ROUTE, method="GET") >= 300
    assert store["id"] not in text  # labels carry patterns, never raw paths
    assert sample(text, "kvbox_records") == 1
    assert sample(text, "kvbox_stores") == 1
    assert sample(text, "kvbox_stored_bytes") == 100
    # PostgreSQL shared by many nodes never lets rows be reused: every lookup is a miss there.
    lookups = [sample(text, "kvbox_read_cache_lookups_total", cache="metadata", result=r) for r in ("hit", "miss")]
    assert sum(lookups) > 0
    again = await scrape(opened)
    assert sample(again, "kvbox_http_requests_total", route="/metrics", method="GET", status="200") == 1


async def test_unmatched_paths_share_one_label(opened: Api) -> None:
    for path in ("/v2/nothing-here", "/v2/other/thing", "/health/nope"):
        assert (await opened.client.get(path)).status_code == 404
    text = await scrape(opened)
    assert sample(text, "kvbox_http_requests_total", route="unmatched", method="GET", status="404") == 3
    assert "nothing-here" not in text


async def test_rate_limited_requests_are_counted(opened: Api) -> None:
    limiter = opened.services.limiter
    limiter.limits = Limits(enabled=True, user_per_second=2)
    statuses = [(await opened.client.get("/v2/key-value-stores", headers=opened.auth())).status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    text = await scrape(opened)
    assert sample(text, "kvbox_rate_limited_requests_total", limit="user") == 2
    assert sample(text, "kvbox_http_requests_total", route="/v2/key-value-stores", method="GET", status="429") == 2


@pytest.mark.parametrize(("size", "hits"), [(None, 1), (0, 0)], ids=["default", "off"])
async def test_the_record_cache_size_decides_which_reads_come_from_memory(
    tmp_path: Path, size: int | None, hits: int
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", backend="sqlite", rate_limits=False, metrics_public=True,
        stats_flush_interval=3600.0,  # no counter flush between the reads: the cache is not emptied
    )  # fmt: skip
    if size is not None:
        settings.record_cache_size = size
    svc = build_services(settings)
    await svc.users.create_user("alice", token=ALICE_TOKEN)
    try:
        transport = httpx.ASGITransport(app=create_app(services=svc))
        async with httpx.AsyncClient(transport=transport, base_url="http://kvbox.test") as client:
            api = Api(client=client, services=svc)
            store = await api.create_store("cached")
            url = f"/v2/key-value-stores/{store['id']}/records/hot"
            assert (await client.put(url, content=b"warm", headers=api.auth())).status_code == 201
            for _ in range(3):
                r = await client.get(url, headers=api.auth())
                assert (r.status_code, r.content) == (200, b"warm")
            text = (await client.get("/metrics")).text
    finally:
        await svc.close()
    # By default a record is kept from its second miss on, so the third read comes from memory.
    assert sample(text, "kvbox_read_cache_lookups_total", cache="records", result="hit") == hits
    assert sample(text, "kvbox_read_cache_lookups_total", cache="records", result="miss") == 3 - hits
