"""Rate limits against a real `kvbox serve`, with the official `apify-client` backing off by itself.

The server runs with tiny limits (5 requests/s per store) so a short burst hits them; the
client must then get every write and read through without raising.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from apify_client import ApifyClient

from conftest import ServerProcess, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

LIMIT = 5
RECORDS = 30


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = start_server(
        tmp_path / "data",
        extra_env={
            "KVBOX_RATE_LIMITS": "true",
            "KVBOX_RATE_LIMIT_RECORDS": str(LIMIT),
            "KVBOX_RATE_LIMIT_STORE": str(LIMIT),
        },
    )
    try:
        yield srv
    finally:
        srv.stop()


def test_apify_client_backs_off_and_succeeds(limited_server: ServerProcess) -> None:
    url = limited_server.url
    token = limited_server.admin_token
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=15) as raw:
        r = raw.post("/v2/key-value-stores", params={"name": "throttled"}, json={})
        assert r.status_code == 201, r.text
        store_id = r.json()["data"]["id"]

        # A raw burst on one store: past the first few, the server answers 429.
        statuses = []
        for i in range(4 * LIMIT):
            r = raw.put(f"/v2/key-value-stores/{store_id}/records/burst-{i}", content=b"x")
            statuses.append(r.status_code)
            assert r.headers["x-ratelimit-limit"] == str(LIMIT)
            if r.status_code == 429:
                error = r.json()["error"]
                assert error["type"] == "rate-limit-exceeded"
                assert f"rate limit of {LIMIT} requests per second" in error["message"]
        assert set(statuses) <= {201, 429}, statuses
        assert statuses.count(429) >= 1, statuses
        assert statuses[0] == 201

    # The bucket is empty now; the official client meets 429s at once and must retry them.
    client = ApifyClient(
        token,
        api_url=url,
        api_public_url=url,
        max_retries=8,
        min_delay_between_retries=timedelta(milliseconds=100),
    )
    kvs = client.key_value_store(store_id)
    started = time.monotonic()
    for i in range(RECORDS):
        kvs.set_record(f"rec-{i}", {"i": i})
    for i in range(RECORDS):
        record = kvs.get_record(f"rec-{i}")
        assert record is not None and record["value"] == {"i": i}
    elapsed = time.monotonic() - started

    # 60 record requests at 5 per second cannot all have gone through the first time.
    stats = client._statistics  # the client's own count of the 429s it retried
    assert sum(stats.rate_limit_errors.values()) >= 1, stats
    assert stats.requests > stats.calls
    assert elapsed >= (2 * RECORDS - LIMIT) / LIMIT * 0.9
    keys = kvs.list_keys(limit=1000)
    assert {item.key for item in keys.items} >= {f"rec-{i}" for i in range(RECORDS)}
