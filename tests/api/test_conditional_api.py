"""Conditional requests over HTTP (extensions.md section 2): ETags on writes, If-Match and
If-None-Match on PUT, POST and DELETE, and the preconditions of GET and HEAD."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from api.test_records_api import INLINE, assert_error, blob_ids, owner_get, put, records
from conftest import Api
from kvbox.core.clock import FakeClock, http_date
from kvbox.core.errors import PreconditionFailedError

pytestmark = pytest.mark.anyio

FAILED = PreconditionFailedError.type


@pytest.fixture
async def store(api: Api) -> dict[str, Any]:
    return await api.create_store("conditional")


async def etag_of(api: Api, store_id: str, key: str) -> str:
    r = await owner_get(api, store_id, key)
    assert r.status_code == 200, r.text
    return r.headers["etag"]


async def stats(api: Api, store_id: str) -> dict[str, Any]:
    r = await api.client.get(f"/v2/key-value-stores/{store_id}", headers=api.auth())
    data: dict[str, Any] = r.json()["data"]["stats"]
    return data


async def test_every_write_answers_its_new_etag(api: Api, store: dict[str, Any]) -> None:
    first = await put(api, store["id"], "k", b"same bytes")
    second = await api.client.post(records(store["id"], "k"), content=b"same bytes", headers=api.auth())
    assert first.status_code == second.status_code == 201
    tags = {first.headers["etag"], second.headers["etag"]}
    assert len(tags) == 2 and all(t.startswith('"') and t.endswith('"') for t in tags)
    assert await etag_of(api, store["id"], "k") == second.headers["etag"]
    assert second.json() == {}  # the body stays as the official clients know it


async def test_create_only_with_if_none_match_star(api: Api, store: dict[str, Any]) -> None:
    created = await put(api, store["id"], "lock", b"mine", **{"If-None-Match": "*"})
    assert created.status_code == 201
    writes = (await stats(api, store["id"]))["writeCount"]
    refused = await put(api, store["id"], "lock", b"theirs", **{"If-None-Match": "*"})
    assert_error(refused, 412, FAILED)
    assert (await owner_get(api, store["id"], "lock")).content == b"mine"
    assert (await stats(api, store["id"]))["writeCount"] == writes  # nothing changed


async def test_if_match_replaces_only_the_version_read(api: Api, store: dict[str, Any]) -> None:
    etag = (await put(api, store["id"], "k", b"v1")).headers["etag"]
    replaced = await put(api, store["id"], "k", b"v2", **{"If-Match": etag})
    assert replaced.status_code == 201 and replaced.headers["etag"] != etag
    assert_error(await put(api, store["id"], "k", b"v3", **{"If-Match": etag}), 412, FAILED)  # lost the race
    assert_error(await put(api, store["id"], "k", b"v3", **{"If-Match": f"W/{replaced.headers['etag']}"}), 412, FAILED)
    assert (await owner_get(api, store["id"], "k")).content == b"v2"
    listed = f'"nope", {replaced.headers["etag"]}'
    assert (await put(api, store["id"], "k", b"v4", **{"If-Match": listed})).status_code == 201
    bare = (await etag_of(api, store["id"], "k")).strip('"')
    assert (
        await put(api, store["id"], "k", b"v5", **{"If-Match": bare})
    ).status_code == 201  # unquoted, as S3 takes it
    assert (await put(api, store["id"], "k", b"v6", **{"If-Match": "*"})).status_code == 201
    assert_error(await put(api, store["id"], "new", b"x", **{"If-Match": "*"}), 412, FAILED)
    assert_error(await put(api, store["id"], "new", b"x", **{"If-Match": etag}), 412, FAILED)
    assert (await owner_get(api, store["id"], "new")).status_code == 404


@pytest.mark.parametrize("header", ['"unterminated', '"a" "b"', "a b", '"x",,"y"'])
async def test_an_unreadable_if_match_refuses_the_write(api: Api, store: dict[str, Any], header: str) -> None:
    await put(api, store["id"], "k", b"kept")
    assert_error(await put(api, store["id"], "k", b"changed", **{"If-Match": header}), 412, FAILED)
    assert (await owner_get(api, store["id"], "k")).content == b"kept"


async def test_if_none_match_with_tags_on_a_write(api: Api, store: dict[str, Any]) -> None:
    etag = (await put(api, store["id"], "k", b"v1")).headers["etag"]
    assert_error(await put(api, store["id"], "k", b"v2", **{"If-None-Match": etag}), 412, FAILED)
    assert (await put(api, store["id"], "k", b"v2", **{"If-None-Match": '"other"'})).status_code == 201


async def test_a_large_body_is_refused_before_it_is_stored(api: Api, store: dict[str, Any]) -> None:
    await put(api, store["id"], "big", b"a" * (INLINE + 1))
    before = await blob_ids(api.services)
    big = b"b" * (3 * INLINE)
    assert_error(await put(api, store["id"], "big", big, **{"If-None-Match": "*"}), 412, FAILED)

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: refused at commit
        for _ in range(3):
            yield b"c" * INLINE

    r = await api.client.put(records(store["id"], "big"), content=chunked(), headers={**api.auth(),
                             "If-Match": '"stale"'})  # fmt: skip
    assert_error(r, 412, FAILED)
    assert await blob_ids(api.services) == before  # no body left behind
    assert (await owner_get(api, store["id"], "big")).content == b"a" * (INLINE + 1)


async def test_conditional_delete(api: Api, store: dict[str, Any]) -> None:
    etag = (await put(api, store["id"], "k", b"v1")).headers["etag"]
    url = records(store["id"], "k")
    for headers in ({"If-Match": '"stale"'}, {"If-None-Match": "*"}, {"If-None-Match": etag}):
        assert_error(await api.client.delete(url, headers={**api.auth(), **headers}), 412, FAILED)
    assert (await owner_get(api, store["id"], "k")).status_code == 200
    assert (await stats(api, store["id"]))["deleteCount"] == 0
    assert (await api.client.delete(url, headers={**api.auth(), "If-Match": etag})).status_code == 204
    assert (await owner_get(api, store["id"], "k")).status_code == 404
    assert_error(await api.client.delete(url, headers={**api.auth(), "If-Match": "*"}), 412, FAILED)
    assert (await api.client.delete(url, headers=api.auth())).status_code == 204  # unconditional: as before
    assert (await api.client.delete(url, headers={**api.auth(), "If-None-Match": "*"})).status_code == 204


async def test_a_condition_never_skips_the_permission_check(api: Api, store: dict[str, Any]) -> None:
    await put(api, store["id"], "k", b"v1")
    r = await api.client.put(records(store["id"], "k"), content=b"x", headers={"If-Match": "*"})
    assert r.status_code == 401
    r = await api.client.delete(records(store["id"], "missing"), headers={"If-Match": "*"})
    assert r.status_code == 401


# reads


async def test_if_match_on_get_and_head(api: Api, store: dict[str, Any]) -> None:
    etag = (await put(api, store["id"], "k", b"body")).headers["etag"]
    ok = await owner_get(api, store["id"], "k", headers={"If-Match": etag})
    assert ok.status_code == 200 and ok.content == b"body"
    assert (await owner_get(api, store["id"], "k", headers={"If-Match": "*"})).status_code == 200
    assert_error(await owner_get(api, store["id"], "k", headers={"If-Match": '"other"'}), 412, FAILED)
    head = await api.client.head(records(store["id"], "k"), headers={**api.auth(), "If-Match": '"other"'})
    assert head.status_code == 412 and head.content == b""
    assert (await owner_get(api, store["id"], "missing", headers={"If-Match": "*"})).status_code == 404


async def test_if_none_match_on_head(api: Api, store: dict[str, Any]) -> None:
    etag = (await put(api, store["id"], "k", b"body")).headers["etag"]
    head = await api.client.head(records(store["id"], "k"), headers={**api.auth(), "If-None-Match": etag})
    assert head.status_code == 304
    assert head.headers["etag"] == etag and "content-length" not in head.headers
    head = await api.client.head(records(store["id"], "k"), headers={**api.auth(), "If-None-Match": '"x"'})
    assert head.status_code == 200 and head.headers["content-length"] == "4"


async def test_if_modified_since_at_whole_seconds(api: Api, store: dict[str, Any], clock: FakeClock) -> None:
    clock.advance(ms=1000 - clock.now_ms() % 1000 + 250)  # a write at .250 of a second
    await put(api, store["id"], "k", b"body")
    r = await owner_get(api, store["id"], "k")
    last_modified = r.headers["last-modified"]
    assert last_modified == http_date(clock.now_ms())
    for method in ("GET", "HEAD"):
        same = await api.client.request(method, records(store["id"], "k"),
                                        headers={**api.auth(), "If-Modified-Since": last_modified})  # fmt: skip
        assert same.status_code == 304 and same.content == b""
        earlier = http_date(clock.now_ms() - 1000)
        older = await api.client.request(method, records(store["id"], "k"),
                                         headers={**api.auth(), "If-Modified-Since": earlier})  # fmt: skip
        assert older.status_code == 200
    for ignored in ("not a date", "", "Thu, 99 Jan 2026 00:00:00 GMT"):
        r = await owner_get(api, store["id"], "k", headers={"If-Modified-Since": ignored})
        assert r.status_code == 200 and r.content == b"body"
    # If-None-Match decides alone when both are sent.
    r = await owner_get(api, store["id"], "k", headers={"If-None-Match": '"other"', "If-Modified-Since": last_modified})
    assert r.status_code == 200


async def test_no_precondition_header_changes_nothing(api: Api, store: dict[str, Any]) -> None:
    """What the official clients see: no condition headers, the same answers as before."""
    r = await put(api, store["id"], "k", b"body", **{"content-type": "text/plain"})
    assert r.status_code == 201 and r.json() == {}
    got = await owner_get(api, store["id"], "k")
    assert got.status_code == 200 and got.content == b"body"
    assert got.headers["accept-ranges"] == "bytes" and got.headers["last-modified"]
    assert (await api.client.delete(records(store["id"], "k"), headers=api.auth())).status_code == 204


async def test_preflight_allows_the_condition_headers(api: Api, store: dict[str, Any]) -> None:
    r = await api.client.options(records(store["id"], "k"), headers={"Origin": "https://app.example",
                                 "Access-Control-Request-Method": "PUT"})  # fmt: skip
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"if-match", "if-none-match", "if-modified-since", "range", "if-range"} <= allowed
    got = await owner_get(api, store["id"], "missing")
    exposed = {h.strip().lower() for h in got.headers["access-control-expose-headers"].split(",")}
    assert {"etag", "content-range", "accept-ranges", "last-modified"} <= exposed
