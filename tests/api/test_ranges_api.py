"""Range reads over HTTP (extensions.md section 3): 206 with Content-Range, 416, If-Range,
Accept-Ranges, and ranges over the stored bytes of a compressed record."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.test_records_api import INLINE, assert_error, owner_get, put, raw_get, records
from conftest import Api
from kvbox.core.errors import PreconditionFailedError, RangeNotSatisfiableError

pytestmark = pytest.mark.anyio

BODY = bytes(range(256)) * 12  # 3072 bytes: a blob (the fixture inlines up to 1024)
SMALL = b"0123456789" * 10  # inline


@pytest.fixture
async def store(api: Api) -> dict[str, Any]:
    created = await api.create_store("ranges")
    await put(api, created["id"], "big", BODY, **{"content-type": "video/mp4"})
    await put(api, created["id"], "small", SMALL)
    return created


async def ranged(api: Api, store: dict[str, Any], key: str, value: str, **headers: str) -> Any:
    return await owner_get(api, store["id"], key, headers={"Range": value, **headers})


@pytest.mark.parametrize("key", ["big", "small"])
@pytest.mark.parametrize(
    ("value", "first", "last"),
    [("bytes=0-9", 0, 9), ("bytes=50-", 50, None), ("bytes=-7", -7, None), ("bytes=90-99999", 90, None)],
)
async def test_one_range_answers_206(api: Api, store: dict[str, Any], key: str, value: str, first: int,
                                     last: int | None) -> None:  # fmt: skip
    body = BODY if key == "big" else SMALL
    r = await ranged(api, store, key, value)
    assert r.status_code == 206, r.text
    start = first % len(body)
    end = len(body) if last is None else last + 1
    assert r.content == body[start:end]
    assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{len(body)}"
    assert r.headers["content-length"] == str(end - start)
    assert r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] and r.headers["last-modified"]


@pytest.mark.parametrize("value", ["bytes=3072-", "bytes=5000-6000", "bytes=-0"])
async def test_an_unsatisfiable_range_answers_416(api: Api, store: dict[str, Any], value: str) -> None:
    r = await ranged(api, store, "big", value)
    assert_error(r, 416, RangeNotSatisfiableError.type)
    assert r.headers["content-range"] == "bytes */3072"


async def test_any_range_of_an_empty_record_is_unsatisfiable(api: Api, store: dict[str, Any]) -> None:
    await put(api, store["id"], "empty", b"")
    r = await ranged(api, store, "empty", "bytes=0-")
    assert_error(r, 416, RangeNotSatisfiableError.type)
    assert r.headers["content-range"] == "bytes */0"
    assert (await owner_get(api, store["id"], "empty")).status_code == 200


@pytest.mark.parametrize(
    "value", ["bytes=abc", "bytes=5-1", "bytes=-", "items=0-5", "bytes=0-1,5-6", "bytes 0-5", "bytes=1-2-3"]
)
async def test_a_range_that_cannot_be_read_is_ignored(api: Api, store: dict[str, Any], value: str) -> None:
    r = await ranged(api, store, "big", value)
    assert r.status_code == 200 and r.content == BODY
    assert "content-range" not in r.headers


async def test_if_range(api: Api, store: dict[str, Any]) -> None:
    etag = (await owner_get(api, store["id"], "big")).headers["etag"]
    assert (await ranged(api, store, "big", "bytes=0-3", **{"If-Range": etag})).status_code == 206
    for other in ('"changed"', f"W/{etag}", (await owner_get(api, store["id"], "big")).headers["last-modified"]):
        r = await ranged(api, store, "big", "bytes=0-3", **{"If-Range": other})
        assert r.status_code == 200 and r.content == BODY
    await put(api, store["id"], "big", BODY[::-1])  # a new version: a resumed download starts over
    r = await ranged(api, store, "big", "bytes=0-3", **{"If-Range": etag})
    assert r.status_code == 200 and r.content == BODY[::-1]


async def test_preconditions_come_before_the_range(api: Api, store: dict[str, Any]) -> None:
    etag = (await owner_get(api, store["id"], "big")).headers["etag"]
    assert (await ranged(api, store, "big", "bytes=0-3", **{"If-None-Match": etag})).status_code == 304
    failed = await ranged(api, store, "big", "bytes=999999-", **{"If-Match": '"other"'})
    assert_error(failed, 412, PreconditionFailedError.type)


async def test_head_advertises_ranges_and_ignores_them(api: Api, store: dict[str, Any]) -> None:
    r = await api.client.head(records(store["id"], "big"), headers={**api.auth(), "Range": "bytes=0-9"})
    assert r.status_code == 200
    assert r.headers["accept-ranges"] == "bytes" and r.headers["content-length"] == "3072"
    assert "content-range" not in r.headers


async def test_a_compressed_record_is_ranged_over_its_stored_bytes(api: Api, store: dict[str, Any]) -> None:
    text = b"".join(b"line %d of a long log, %x\n" % (i, i * 7919 % 65536) for i in range(2000))
    packed = gzip.compress(text)
    assert len(packed) > INLINE
    await put(api, store["id"], "log", packed, **{"content-type": "text/plain", "content-encoding": "gzip"})
    url = records(store["id"], "log")

    r, raw = await raw_get(api, url, "gzip")  # sent as stored: the range counts stored bytes
    assert r.status_code == 200 and r.headers["accept-ranges"] == "bytes" and raw == packed
    async with api.client.stream("GET", url, headers={**api.auth(), "Accept-Encoding": "gzip",
                                                      "Range": "bytes=10-29"}) as part:  # fmt: skip
        assert part.status_code == 206
        assert part.headers["content-encoding"] == "gzip"
        assert part.headers["content-range"] == f"bytes 10-29/{len(packed)}"
        assert b"".join([c async for c in part.aiter_raw()]) == packed[10:30]

    # Decoded for a caller that does not take gzip: the range is not honoured (README).
    r, raw = await raw_get(api, url, "identity")
    assert r.status_code == 200 and raw == text and "accept-ranges" not in r.headers
    async with api.client.stream("GET", url, headers={**api.auth(), "Accept-Encoding": "identity",
                                                      "Range": "bytes=10-29"}) as whole:  # fmt: skip
        assert whole.status_code == 200
        assert b"".join([c async for c in whole.aiter_raw()]) == text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.integers(0, 3100), length=st.integers(1, 3100), suffix=st.booleans())
async def test_ranges_are_byte_exact(api: Api, store: dict[str, Any], first: int, length: int, suffix: bool) -> None:
    value = f"bytes=-{length}" if suffix else f"bytes={first}-{first + length - 1}"
    r = await ranged(api, store, "big", value)
    if suffix:
        assert r.status_code == 206 and r.content == BODY[-length:]
    elif first >= len(BODY):
        assert r.status_code == 416
    else:
        assert r.status_code == 206 and r.content == BODY[first : first + length]


async def test_signed_and_shared_reads_take_ranges_too(api: Api, store: dict[str, Any]) -> None:
    listed = await api.client.get(f"/v2/key-value-stores/{store['id']}/keys", headers=api.auth())
    url = next(i["recordPublicUrl"] for i in listed.json()["data"]["items"] if i["key"] == "big")
    r = await api.client.get(url.removeprefix("http://kvbox.test"), headers={"Range": "bytes=-4"})
    assert r.status_code == 206 and r.content == BODY[-4:]
