"""Record endpoints over HTTP: put/get/head/delete, encodings, limits, keys listing, signatures, ZIP, schemas."""

from __future__ import annotations

import base64
import gzip
import io
import json
import zipfile
import zlib
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import brotli
import httpx
import pytest
from apify_client._utils.crypto import create_hmac_signature, create_storage_content_signature
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ALICE_TOKEN, BOB_TOKEN, Api
from kvbox.core.clock import FakeClock
from kvbox.core.models import RecordMeta
from kvbox.service.container import Services

pytestmark = pytest.mark.anyio

MiB = 1 << 20
MAX_RECORD = 4 * MiB  # the fixture's max_record_size
INLINE = 1024  # the fixture's inline_threshold
STORES = "/v2/key-value-stores"

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "br": brotli.compress,
    "deflate": zlib.compress,
}


def records(store_id: str, key: str = "") -> str:
    return f"{STORES}/{store_id}/records/{key}" if key else f"{STORES}/{store_id}/records"


async def put(api: Api, store_id: str, key: str, body: Any, **headers: str) -> httpx.Response:
    return await api.client.put(records(store_id, key), content=body, headers={**api.auth(), **headers})


async def anon_get(api: Api, store_id: str, key: str, **kwargs: Any) -> httpx.Response:
    return await api.client.get(records(store_id, key), **kwargs)


async def owner_get(api: Api, store_id: str, key: str, **kwargs: Any) -> httpx.Response:
    kwargs["headers"] = {**api.auth(), **kwargs.get("headers", {})}
    return await api.client.get(records(store_id, key), **kwargs)


async def raw_get(api: Api, url: str, accept_encoding: str) -> tuple[httpx.Response, bytes]:
    """GET without httpx decoding the body: the bytes exactly as the server sent them."""
    headers = {**api.auth(), "Accept-Encoding": accept_encoding}
    async with api.client.stream("GET", url, headers=headers) as r:
        return r, b"".join([chunk async for chunk in r.aiter_raw()])


async def list_keys(api: Api, store_id: str, token: str | None = ALICE_TOKEN, **params: Any) -> httpx.Response:
    return await api.client.get(f"{STORES}/{store_id}/keys", params=params, headers=api.auth(token))


async def row(services: Services, store_id: str, key: str) -> RecordMeta:
    """The record's row in the index (it must exist)."""
    found = await services.index.get_record(store_id, key)
    assert found is not None, key
    return found


async def blob_ids(services: Services) -> set[str]:
    return {b async for b in services.blobs.list_ids(older_than_ms=services.clock.now_ms() + 10**12)}


def assert_error(r: httpx.Response, status: int, type_: str) -> None:
    assert r.status_code == status, r.text
    assert r.json()["error"]["type"] == type_


@pytest.fixture
async def store(api: Api) -> dict[str, Any]:
    return await api.create_store("records")


# --- put / get / head / delete ------------------------------------------------------------


async def test_put_then_get(api: Api, store: dict[str, Any]) -> None:
    r = await put(api, store["id"], "OUTPUT", b'{"ok":true}', **{"content-type": "application/json"})
    assert r.status_code == 201
    assert r.headers["location"] == f"http://kvbox.test/v2/key-value-stores/{store['id']}/records/OUTPUT"
    assert r.json() == {}

    r = await owner_get(api, store["id"], "OUTPUT")
    assert r.status_code == 200
    assert r.content == b'{"ok":true}'
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == "11"


async def test_post_is_an_alias_of_put_and_overwrites(api: Api, store: dict[str, Any]) -> None:
    r = await api.client.post(records(store["id"], "k"), content=b"first", headers=api.auth())
    assert r.status_code == 201
    assert r.headers["location"].endswith(f"/{store['id']}/records/k")
    assert (await put(api, store["id"], "k", b"second")).status_code == 201
    assert (await owner_get(api, store["id"], "k")).content == b"second"


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=3 * INLINE),
    content_type=st.from_regex(r"[a-z]{1,12}/[a-z0-9.+-]{1,20}(; ?[a-z]{1,8}=[A-Za-z0-9-]{1,10}){0,2}", fullmatch=True),
)
async def test_arbitrary_bytes_and_content_types_round_trip(
    api: Api, store: dict[str, Any], body: bytes, content_type: str
) -> None:
    assert (await put(api, store["id"], "prop", body, **{"content-type": content_type})).status_code == 201
    r = await owner_get(api, store["id"], "prop", params={"attachment": "true"})
    assert r.status_code == 200
    assert r.content == body
    assert r.headers["content-type"] == content_type
    head = await api.client.head(records(store["id"], "prop"), headers=api.auth())
    assert head.headers["content-length"] == str(len(body))


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json; charset=utf-8",
        "Text/HTML;Charset=ISO-8859-1",
        'multipart/mixed; boundary="a b c"',
        "application/x-custom+json; v=2; q=x",
    ],
)
async def test_content_type_is_stored_verbatim(api: Api, store: dict[str, Any], content_type: str) -> None:
    await put(api, store["id"], "typed", b"x", **{"content-type": content_type})
    r = await owner_get(api, store["id"], "typed")
    assert r.headers["content-type"] == content_type


async def test_missing_content_type_defaults_to_octet_stream(api: Api, store: dict[str, Any]) -> None:
    r = await api.client.put(records(store["id"], "bare"), content=b"\x00\x01", headers=api.auth())
    assert "content-type" not in r.request.headers
    assert (await owner_get(api, store["id"], "bare")).headers["content-type"] == "application/octet-stream"


async def test_an_overlong_content_type_is_refused(api: Api, store: dict[str, Any]) -> None:
    r = await put(api, store["id"], "typed", b"x", **{"content-type": "text/plain; x=" + "y" * 2000})
    assert_error(r, 400, "invalid-content-type-header")


async def test_head(api: Api, store: dict[str, Any]) -> None:
    await put(api, store["id"], "here", b"12345", **{"content-type": "text/plain"})
    r = await api.client.head(records(store["id"], "here"), headers=api.auth())
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-length"] == "5"

    missing = await api.client.head(records(store["id"], "gone"), headers=api.auth())
    assert missing.status_code == 404
    assert missing.content == b""
    no_store = await api.client.head(records("AAAAAAAAAAAAAAAAA", "here"), headers=api.auth())
    assert no_store.status_code == 404


async def test_get_missing_record_or_store_is_404(api: Api, store: dict[str, Any]) -> None:
    assert_error(await owner_get(api, store["id"], "nothing"), 404, "record-not-found")
    assert (await owner_get(api, store["id"], "nothing")).json()["error"]["message"] == "Record was not found"
    assert_error(await owner_get(api, "AAAAAAAAAAAAAAAAA", "x"), 404, "record-not-found")
    assert_error(await put(api, "AAAAAAAAAAAAAAAAA", "x", b"v"), 404, "record-not-found")


async def test_delete(api: Api, store: dict[str, Any]) -> None:
    await put(api, store["id"], "temp", b"v")
    r = await api.client.delete(records(store["id"], "temp"), headers=api.auth())
    assert r.status_code == 204
    assert r.content == b""
    assert_error(await owner_get(api, store["id"], "temp"), 404, "record-not-found")
    # Deleting what is not there succeeds: `set_value(key, None)` must never fail.
    assert (await api.client.delete(records(store["id"], "temp"), headers=api.auth())).status_code == 204


# --- large records and the blob store -------------------------------------------------------


async def test_records_above_the_inline_threshold_live_in_the_blob_store(
    api: Api, services: Services, store: dict[str, Any]
) -> None:
    small, large = b"s" * INLINE, bytes(range(256)) * 40  # 1024 and 10240 bytes
    await put(api, store["id"], "small", small)
    await put(api, store["id"], "large", large)
    assert (await row(services, store["id"], "small")).blob_id is None
    large_row = await row(services, store["id"], "large")
    assert large_row.blob_id is not None
    assert await blob_ids(services) == {large_row.blob_id}
    assert (await owner_get(api, store["id"], "small")).content == small
    assert (await owner_get(api, store["id"], "large")).content == large


async def test_replacing_large_with_small_and_back(api: Api, services: Services, store: dict[str, Any]) -> None:
    big1, big2, small = b"1" * 5000, b"2" * 6000, b"tiny"
    await put(api, store["id"], "k", big1)
    first_blob = (await row(services, store["id"], "k")).blob_id

    await put(api, store["id"], "k", big2)
    second_blob = (await row(services, store["id"], "k")).blob_id
    assert second_blob != first_blob
    assert await blob_ids(services) == {second_blob}
    assert (await owner_get(api, store["id"], "k")).content == big2

    await put(api, store["id"], "k", small)
    assert (await row(services, store["id"], "k")).blob_id is None
    assert await blob_ids(services) == set()
    assert (await owner_get(api, store["id"], "k")).content == small

    await put(api, store["id"], "k", big1)
    assert (await owner_get(api, store["id"], "k")).content == big1
    await api.client.delete(records(store["id"], "k"), headers=api.auth())
    assert await blob_ids(services) == set()


# --- content encodings ----------------------------------------------------------------------


@pytest.mark.parametrize("encoding", list(COMPRESSORS))
@pytest.mark.parametrize("size", [100, 200_000], ids=["inline", "blob"])
async def test_stored_encoding_is_served_or_decoded(api: Api, store: dict[str, Any], encoding: str, size: int) -> None:
    plain = (b"The quick brown fox. " * (size // 21 + 1))[:size]
    packed = COMPRESSORS[encoding](plain)
    r = await put(api, store["id"], "packed", packed, **{"content-type": "text/plain", "content-encoding": encoding})
    assert r.status_code == 201, r.text
    url = records(store["id"], "packed")

    r, raw = await raw_get(api, url, f"{encoding}, identity")
    assert r.headers["content-encoding"] == encoding
    assert raw == packed
    r, raw = await raw_get(api, url, "*")
    assert (r.headers["content-encoding"], raw) == (encoding, packed)

    for refuse in ("identity", f"{encoding};q=0", ""):
        r, raw = await raw_get(api, url, refuse)
        assert "content-encoding" not in r.headers, refuse
        assert raw == plain

    keys = (await list_keys(api, store["id"])).json()["data"]["items"]
    assert keys[0]["size"] == len(packed)  # the stored byte count


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
async def test_corrupt_compressed_body_is_refused_and_nothing_changes(
    api: Api, services: Services, store: dict[str, Any], encoding: str
) -> None:
    await put(api, store["id"], "k", b"old value")
    corrupt = b"\x1f\x8b\x08\x00garbage" if encoding == "gzip" else b"garbage that does not decode"
    assert_error(await put(api, store["id"], "k", corrupt, **{"content-encoding": encoding}), 400, "invalid-request")
    truncated = COMPRESSORS[encoding](bytes(range(256)) * 100)[:-8]
    assert_error(await put(api, store["id"], "k", truncated, **{"content-encoding": encoding}), 400, "invalid-request")
    assert (await owner_get(api, store["id"], "k")).content == b"old value"
    assert await blob_ids(services) == set()


@pytest.mark.parametrize("encoding", ["bla", "zstd", "gzip, br"])
async def test_unknown_encoding_is_415(api: Api, store: dict[str, Any], encoding: str) -> None:
    assert_error(
        await put(api, store["id"], "k", b"v", **{"content-encoding": encoding}), 415, "unsupported-content-encoding"
    )
    assert (await owner_get(api, store["id"], "k")).status_code == 404


# --- size limits ------------------------------------------------------------------------------


async def test_declared_length_over_the_limit_is_413(api: Api, store: dict[str, Any]) -> None:
    r = await put(api, store["id"], "k", b"v", **{"content-length": str(MAX_RECORD + 1)})
    assert_error(r, 413, "request-too-large")
    assert (await owner_get(api, store["id"], "k")).status_code == 404


async def test_a_body_at_the_limit_is_accepted(api: Api, store: dict[str, Any]) -> None:
    assert (await put(api, store["id"], "k", b"\xab" * MAX_RECORD)).status_code == 201


async def test_a_streamed_body_growing_past_the_limit_is_413(
    api: Api, services: Services, store: dict[str, Any]
) -> None:
    await put(api, store["id"], "k", b"old value")

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(MAX_RECORD // (64 * 1024) + 2):
            yield b"z" * (64 * 1024)

    r = await api.client.put(records(store["id"], "k"), content=endless(), headers=api.auth())
    assert "content-length" not in r.request.headers
    assert_error(r, 413, "request-too-large")
    assert (await owner_get(api, store["id"], "k")).content == b"old value"
    assert await blob_ids(services) == set()


async def test_a_compressed_body_inflating_past_the_limit_is_413(
    api: Api, services: Services, store: dict[str, Any]
) -> None:
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(z.compress(bytes(MiB)) for _ in range(8)) + z.flush()  # 8 MiB of zeros in ~8 KB
    assert len(bomb) < 20_000
    assert_error(await put(api, store["id"], "k", bomb, **{"content-encoding": "gzip"}), 413, "request-too-large")
    assert (await owner_get(api, store["id"], "k")).status_code == 404
    assert await blob_ids(services) == set()


# --- keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["a%2Fb", "a%20b", "a~b", "%7E", "caf%C3%A9", "a*b", "x" * 257])
async def test_invalid_keys_are_refused_on_every_method(api: Api, store: dict[str, Any], key: str) -> None:
    url = records(store["id"], key)
    for method in ("GET", "PUT", "POST", "DELETE"):
        r = await api.client.request(
            method, url, content=b"v" if method in ("PUT", "POST") else None, headers=api.auth()
        )
        assert_error(r, 400, "invalid-record-key")
    assert (await api.client.head(url, headers=api.auth())).status_code == 400
    assert (await list_keys(api, store["id"])).json()["data"]["items"] == []


async def test_percent_encoded_valid_characters_are_decoded(api: Api, store: dict[str, Any]) -> None:
    assert (await put(api, store["id"], "it%27s%28a%29%21", b"v")).status_code == 201
    assert (await owner_get(api, store["id"], "it's(a)!")).content == b"v"


# --- response headers ----------------------------------------------------------------------


async def test_attachment_sets_content_disposition(api: Api, store: dict[str, Any]) -> None:
    await put(api, store["id"], "report.pdf", b"%PDF", **{"content-type": "application/pdf"})
    for value in ("true", "1", "TRUE"):
        r = await owner_get(api, store["id"], "report.pdf", params={"attachment": value})
        assert r.headers["content-disposition"] == 'attachment; filename="report.pdf"'
    for value in ("false", "0"):
        r = await owner_get(api, store["id"], "report.pdf", params={"attachment": value})
        assert "content-disposition" not in r.headers
    assert "content-disposition" not in (await owner_get(api, store["id"], "report.pdf")).headers
    assert_error(
        await owner_get(api, store["id"], "report.pdf", params={"attachment": "sure"}), 400, "invalid-parameter"
    )


async def test_etag_and_if_none_match(api: Api, store: dict[str, Any]) -> None:
    await put(api, store["id"], "k", b"version one")
    r = await owner_get(api, store["id"], "k")
    etag = r.headers["etag"]
    assert etag.startswith('"') and etag.endswith('"')

    cached = await owner_get(api, store["id"], "k", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert (await owner_get(api, store["id"], "k", headers={"If-None-Match": f'"other", W/{etag}'})).status_code == 304
    assert (await owner_get(api, store["id"], "k", headers={"If-None-Match": '"other"'})).status_code == 200

    await put(api, store["id"], "k", b"version two")
    fresh = await owner_get(api, store["id"], "k", headers={"If-None-Match": etag})
    assert fresh.status_code == 200
    assert fresh.content == b"version two"
    assert fresh.headers["etag"] != etag


async def test_html_is_served_sandboxed(api: Api, store: dict[str, Any]) -> None:
    page = b"<html><script>document.cookie</script></html>"
    await put(api, store["id"], "page.html", page, **{"content-type": "text/html; charset=utf-8"})
    r = await owner_get(api, store["id"], "page.html")
    assert r.content == page  # served unmodified
    assert "sandbox" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"


# --- key listing ---------------------------------------------------------------------------


async def test_keys_are_listed_in_utf8_byte_order(api: Api, store: dict[str, Any]) -> None:
    keys = ["b", "B", "a", "_x", "(p)", "0", "!", "a-b", "ab", "Z"]
    for key in keys:
        await put(api, store["id"], key, key.encode() * 3)
    data = (await list_keys(api, store["id"])).json()["data"]
    assert [i["key"] for i in data["items"]] == sorted(keys, key=str.encode)
    assert [i["size"] for i in data["items"]] == [len(k) * 3 for k in sorted(keys, key=str.encode)]
    assert (data["count"], data["limit"], data["isTruncated"]) == (10, 1000, False)
    assert data["exclusiveStartKey"] is None
    assert data["nextExclusiveStartKey"] is None


async def test_keys_pagination_and_prefix(api: Api, store: dict[str, Any]) -> None:
    for key in ["a1", "a2", "a3", "a4", "b1"]:
        await put(api, store["id"], key, b"v")

    page = (await list_keys(api, store["id"], limit=2)).json()["data"]
    assert [i["key"] for i in page["items"]] == ["a1", "a2"]
    assert (page["isTruncated"], page["nextExclusiveStartKey"], page["limit"]) == (True, "a2", 2)

    page = (await list_keys(api, store["id"], limit=2, exclusiveStartKey="a2")).json()["data"]
    assert [i["key"] for i in page["items"]] == ["a3", "a4"]
    assert (page["isTruncated"], page["nextExclusiveStartKey"], page["exclusiveStartKey"]) == (True, "a4", "a2")

    page = (await list_keys(api, store["id"], limit=2, exclusiveStartKey="a4")).json()["data"]
    assert [i["key"] for i in page["items"]] == ["b1"]
    assert (page["isTruncated"], page["nextExclusiveStartKey"]) == (False, None)

    # A page that ends exactly at the last key is not truncated.
    page = (await list_keys(api, store["id"], prefix="a", limit=2, exclusiveStartKey="a2")).json()["data"]
    assert [i["key"] for i in page["items"]] == ["a3", "a4"]
    assert (page["isTruncated"], page["nextExclusiveStartKey"]) == (False, None)

    # The start key need not exist.
    page = (await list_keys(api, store["id"], exclusiveStartKey="a25")).json()["data"]
    assert [i["key"] for i in page["items"]] == ["a3", "a4", "b1"]

    assert [i["key"] for i in (await list_keys(api, store["id"], prefix="b")).json()["data"]["items"]] == ["b1"]
    assert (await list_keys(api, store["id"], prefix="c")).json()["data"]["items"] == []


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    # "." and ".." are left out: httpx removes them from URL paths as dot segments.
    keys=st.sets(
        st.text(alphabet="abAB0_-.", min_size=1, max_size=4).filter(lambda k: k not in (".", "..")), max_size=12
    ),
    limit=st.integers(min_value=1, max_value=5),
    prefix=st.sampled_from(["", "a", "A", "ab"]),
)
async def test_following_the_cursor_visits_every_matching_key_once(
    api: Api, keys: set[str], limit: int, prefix: str
) -> None:
    store = await api.create_store()
    for key in keys:
        assert (await put(api, store["id"], key, b"v")).status_code == 201
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(len(keys) + 1):  # a cursor that does not advance must fail, not loop forever
        params: dict[str, Any] = {"limit": limit, "prefix": prefix}
        if cursor is not None:
            params["exclusiveStartKey"] = cursor
        page = (await list_keys(api, store["id"], **params)).json()["data"]
        seen += [i["key"] for i in page["items"]]
        assert page["count"] == len(page["items"]) <= limit
        assert (page["nextExclusiveStartKey"] is None) == (not page["isTruncated"])
        cursor = page["nextExclusiveStartKey"]
        if cursor is None:
            break
    assert cursor is None, "the cursor did not advance"
    assert seen == sorted((k for k in keys if k.startswith(prefix)), key=str.encode)


@pytest.mark.parametrize(("requested", "effective"), [("0", 1000), ("1001", 1000), ("5", 5)])
async def test_keys_limit_defaults_and_clamps(api: Api, store: dict[str, Any], requested: str, effective: int) -> None:
    assert (await list_keys(api, store["id"], limit=requested)).json()["data"]["limit"] == effective


@pytest.mark.parametrize("limit", ["-1", "many"])
async def test_keys_bad_limit_is_400(api: Api, store: dict[str, Any], limit: str) -> None:
    assert_error(await list_keys(api, store["id"], limit=limit), 400, "invalid-parameter")


# --- signed URLs ------------------------------------------------------------------------------


async def test_record_public_urls_are_signed_for_the_owner(api: Api, store: dict[str, Any]) -> None:
    await put(api, store["id"], "it's(1)", b"secret stuff")
    item = (await list_keys(api, store["id"])).json()["data"]["items"][0]
    signature = create_hmac_signature(store["urlSigningSecretKey"], "it's(1)")
    assert item["recordPublicUrl"] == (
        f"http://kvbox.test/v2/key-value-stores/{store['id']}/records/it's(1)?signature={signature}"
    )

    r = await api.client.get(item["recordPublicUrl"])  # anonymous, restricted store
    assert r.status_code == 200
    assert r.content == b"secret stuff"
    assert (await api.client.head(item["recordPublicUrl"])).status_code == 200


async def test_bad_record_signatures_are_refused(api: Api, store: dict[str, Any]) -> None:
    for key in ("a", "b"):
        await put(api, store["id"], key, b"v")
    sig_a = create_hmac_signature(store["urlSigningSecretKey"], "a")
    assert (await anon_get(api, store["id"], "a", params={"signature": sig_a})).status_code == 200
    for key, sig in [("b", sig_a), ("a", sig_a[:-1]), ("a", sig_a + "x"), ("a", "")]:
        assert_error(await anon_get(api, store["id"], key, params={"signature": sig}), 403, "insufficient-permissions")
    # A signature is for reading only.
    r = await api.client.put(records(store["id"], "a"), params={"signature": sig_a}, content=b"overwritten")
    assert_error(r, 401, "token-not-provided")
    r = await api.client.delete(records(store["id"], "a"), params={"signature": sig_a}, headers=api.auth(BOB_TOKEN))
    assert_error(r, 403, "insufficient-permissions")


async def test_anonymous_listing_of_a_public_store_has_unsigned_urls(api: Api, store: dict[str, Any]) -> None:
    await api.client.put(
        f"{STORES}/{store['id']}", json={"generalAccess": "ANYONE_WITH_ID_CAN_READ"}, headers=api.auth()
    )
    await put(api, store["id"], "k", b"v")
    item = (await list_keys(api, store["id"], token=None)).json()["data"]["items"][0]
    assert item["recordPublicUrl"] == f"http://kvbox.test/v2/key-value-stores/{store['id']}/records/k"
    assert (await api.client.get(item["recordPublicUrl"])).content == b"v"


async def test_keys_public_url_lets_anyone_list_until_it_expires(
    api: Api, store: dict[str, Any], clock: FakeClock
) -> None:
    await put(api, store["id"], "k", b"v")
    url = store["keysPublicUrl"]
    assert "signature=" in url
    assert_error(await list_keys(api, store["id"], token=None), 403, "insufficient-permissions")

    r = await api.client.get(url)
    assert r.status_code == 200
    assert [i["key"] for i in r.json()["data"]["items"]] == ["k"]
    # The listed record URLs are signed too, so the anonymous caller can follow them.
    record_url = r.json()["data"]["items"][0]["recordPublicUrl"]
    assert "signature=" in record_url
    assert (await api.client.get(record_url)).content == b"v"
    # Other query parameters are not covered by the signature.
    r = await api.client.get(url + "&prefix=z&limit=1")
    assert r.status_code == 200 and r.json()["data"]["items"] == []

    clock.advance(days=13)
    assert (await api.client.get(url)).status_code == 200
    clock.advance(days=1, seconds=1)
    assert_error(await api.client.get(url), 403, "insufficient-permissions")


async def test_storage_signature_in_the_python_clients_padded_form(api: Api, store: dict[str, Any]) -> None:
    secret = store["urlSigningSecretKey"]
    padded = next(
        sig
        for minutes in range(1, 200)
        if (
            sig := create_storage_content_signature(store["id"], secret, expires_in=timedelta(minutes=minutes))
        ).endswith("=")
    )
    r = await api.client.get(f"{STORES}/{store['id']}/keys", params={"signature": padded})
    assert "%3D" in str(r.request.url)
    assert r.status_code == 200
    permanent = create_storage_content_signature(store["id"], secret)
    assert (await api.client.get(f"{STORES}/{store['id']}/keys", params={"signature": permanent})).status_code == 200


async def test_tampered_or_foreign_storage_signatures_are_refused(api: Api, store: dict[str, Any]) -> None:
    other = await api.create_store("other")
    good = create_storage_content_signature(store["id"], store["urlSigningSecretKey"])
    decoded = base64.urlsafe_b64decode(good).decode()
    version, _, mac = decoded.split(".")
    bad = [
        create_storage_content_signature(other["id"], other["urlSigningSecretKey"]),  # another store's
        create_storage_content_signature(store["id"], other["urlSigningSecretKey"]),  # wrong secret
        base64.urlsafe_b64encode(f"{version}.99999999999999.{mac}".encode()).decode(),  # expiry changed
        good[:-6] + "AAAAAA",
        "not-a-signature",
        create_hmac_signature(store["urlSigningSecretKey"], "k"),  # a record signature does not list keys
    ]
    for sig in bad:
        r = await api.client.get(f"{STORES}/{store['id']}/keys", params={"signature": sig})
        assert_error(r, 403, "insufficient-permissions")


# --- ZIP download -----------------------------------------------------------------------------


async def test_zip_download(api: Api, store: dict[str, Any]) -> None:
    big = bytes(range(256)) * 100
    await put(api, store["id"], "a.json", b'{"a":1}', **{"content-type": "application/json"})
    await put(api, store["id"], "b-big", big)
    await put(api, store["id"], "c(gz)", gzip.compress(b"was gzipped"), **{"content-encoding": "gzip"})
    await put(api, store["id"], "d-br", brotli.compress(b"was brotli"), **{"content-encoding": "br"})

    r = await api.client.get(records(store["id"]), headers=api.auth())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.namelist() == ["a.json", "b-big", "c(gz)", "d-br"]
        assert zf.read("a.json") == b'{"a":1}'
        assert zf.read("b-big") == big
        assert zf.read("c(gz)") == b"was gzipped"
        assert zf.read("d-br") == b"was brotli"

    r = await api.client.get(records(store["id"]), params={"prefix": "b"}, headers=api.auth())
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.namelist() == ["b-big"]


async def test_zip_of_an_empty_store_and_access(api: Api, store: dict[str, Any]) -> None:
    r = await api.client.get(records(store["id"]), headers=api.auth())
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.namelist() == []
    assert_error(await api.client.get(records(store["id"])), 403, "insufficient-permissions")
    assert_error(
        await api.client.get(records(store["id"]), headers=api.auth(BOB_TOKEN)), 403, "insufficient-permissions"
    )
    r = await api.client.get(store["recordsPublicUrl"])  # signed for the owner, usable by anyone
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"


# --- schema collections -------------------------------------------------------------------------

SCHEMA = {
    "actorKeyValueStoreSchemaVersion": 1,
    "title": "Crawl output",
    "collections": {
        "screenshots": {"title": "Screenshots", "keyPrefix": "shot-", "contentTypes": ["image/png", "image/jpeg"]},
        "config": {
            "title": "Config",
            "key": "CONFIG",
            "contentTypes": ["application/json"],
            "jsonSchema": {
                "type": "object",
                "properties": {"depth": {"type": "integer", "minimum": 0}},
                "required": ["depth"],
            },
        },
    },
}


@pytest.fixture
async def schema_store(api: Api) -> dict[str, Any]:
    r = await api.client.post(STORES, params={"name": "typed"}, json={"schema": SCHEMA}, headers=api.auth())
    assert r.status_code == 201
    data: dict[str, Any] = r.json()["data"]
    return data


async def test_collection_content_types_are_enforced(api: Api, schema_store: dict[str, Any]) -> None:
    sid = schema_store["id"]
    assert (await put(api, sid, "shot-1", b"\x89PNG", **{"content-type": "image/png"})).status_code == 201
    assert (await put(api, sid, "shot-2", b"\xff\xd8", **{"content-type": "IMAGE/JPEG; q=1"})).status_code == 201
    assert_error(
        await put(api, sid, "shot-3", b"text", **{"content-type": "text/plain"}), 400, "schema-validation-failed"
    )
    assert_error(await put(api, sid, "shot-4", b"bytes"), 400, "schema-validation-failed")  # octet-stream default
    assert (await owner_get(api, sid, "shot-3")).status_code == 404
    assert (await put(api, sid, "other", b"text", **{"content-type": "text/plain"})).status_code == 201


@pytest.mark.parametrize("size", ["inline", "blob"])
async def test_collection_json_schema_is_enforced(
    api: Api, services: Services, schema_store: dict[str, Any], size: str
) -> None:
    sid = schema_store["id"]
    pad = "x" * (0 if size == "inline" else 3 * INLINE)
    good = json.dumps({"depth": 2, "note": pad}).encode()
    json_type = {"content-type": "application/json; charset=utf-8"}
    assert (await put(api, sid, "CONFIG", good, **json_type)).status_code == 201

    for bad in [{"depth": -1, "note": pad}, {"depth": "deep"}, {"note": pad}, [1, 2]]:
        r = await put(api, sid, "CONFIG", json.dumps(bad).encode(), **json_type)
        assert_error(r, 400, "schema-validation-failed")
    assert_error(await put(api, sid, "CONFIG", b"{not json", **json_type), 400, "schema-validation-failed")
    r = await put(
        api,
        sid,
        "CONFIG",
        gzip.compress(json.dumps({"depth": -5}).encode()),
        **json_type,
        **{"content-encoding": "gzip"},
    )
    assert_error(r, 400, "schema-validation-failed")
    assert (await owner_get(api, sid, "CONFIG")).content == good
    assert len(await blob_ids(services)) == (0 if size == "inline" else 1)

    packed = gzip.compress(json.dumps({"depth": 7}).encode())
    r = await put(api, sid, "CONFIG", packed, **json_type, **{"content-encoding": "gzip"})
    assert r.status_code == 201
    assert (await owner_get(api, sid, "CONFIG")).json() == {"depth": 7}


@pytest.mark.parametrize("size", ["inline", "blob"])
async def test_a_write_by_name_goes_to_the_store_the_name_names_now(api: Api, services: Services, size: str) -> None:
    """A process may keep its decision on a store named by name (the scale-out record path
    does): renamed, or the name given to another store, the next write by that name follows
    the name, and is checked against the schema of the store it lands in."""
    pad = "x" * (0 if size == "inline" else 3 * INLINE)
    first = (await api.create_store("moving"))["id"]
    json_type = {"content-type": "application/json"}
    body = json.dumps({"note": pad}).encode()
    assert (await put(api, "~moving", "CONFIG", body, **json_type)).status_code == 201
    r = await api.client.put(f"{STORES}/{first}", json={"name": "moved"}, headers=api.auth())
    assert r.status_code == 200, r.text
    r = await api.client.post(STORES, params={"name": "moving"}, json={"schema": SCHEMA}, headers=api.auth())
    assert r.status_code == 201, r.text
    second = r.json()["data"]["id"]

    # The first store took this body; the one the name names now refuses it, and nothing is stored.
    assert_error(await put(api, "~moving", "CONFIG", body, **json_type), 400, "schema-validation-failed")
    assert (await owner_get(api, second, "CONFIG")).status_code == 404
    assert (await put(api, "~moving", "CONFIG", json.dumps({"depth": 3}).encode(), **json_type)).status_code == 201
    assert (await owner_get(api, second, "CONFIG")).json() == {"depth": 3}
    assert (await owner_get(api, first, "CONFIG")).json() == {"note": pad}

    r = await api.client.put(f"{STORES}/{second}", json={"name": "gone"}, headers=api.auth())
    assert r.status_code == 200, r.text
    assert_error(await put(api, "~moving", "CONFIG", b'{"depth": 1}', **json_type), 404, "record-not-found")
    assert len(await blob_ids(services)) == (0 if size == "inline" else 1)


async def test_a_write_by_name_after_the_store_was_replaced_is_decided_on_the_new_store(api: Api) -> None:
    """Bob may write to alice's store by its name; the store is deleted and another made with
    that name, not shared: his next write by the name is refused (403), not a missing store."""
    first = (await api.create_store("replaced"))["id"]
    grant = {"permission": "WRITE"}
    r = await api.client.put(f"{STORES}/{first}/grants/bob", json=grant, headers=api.auth())
    assert r.status_code == 200, r.text
    by_name = f"{STORES}/alice~replaced/records/k"
    assert (await api.client.put(by_name, content=b"bob", headers=api.auth(BOB_TOKEN))).status_code == 201
    assert (await api.client.delete(f"{STORES}/{first}", headers=api.auth())).status_code == 204
    second = (await api.create_store("replaced"))["id"]
    assert_error(
        await api.client.put(by_name, content=b"no", headers=api.auth(BOB_TOKEN)), 403, "insufficient-permissions"
    )
    assert (await owner_get(api, second, "k")).status_code == 404


async def test_collection_filter_on_keys_and_zip(api: Api, schema_store: dict[str, Any]) -> None:
    sid = schema_store["id"]
    await put(api, sid, "shot-1", b"1", **{"content-type": "image/png"})
    await put(api, sid, "shot-2", b"2", **{"content-type": "image/png"})
    await put(api, sid, "CONFIG", b'{"depth":1}', **{"content-type": "application/json"})
    await put(api, sid, "misc", b"m")

    def names(r: httpx.Response) -> list[str]:
        return [i["key"] for i in r.json()["data"]["items"]]

    assert names(await list_keys(api, sid, collection="screenshots")) == ["shot-1", "shot-2"]
    assert names(await list_keys(api, sid, collection="config")) == ["CONFIG"]
    assert names(await list_keys(api, sid, collection="screenshots", prefix="shot-2")) == ["shot-2"]
    assert names(await list_keys(api, sid, collection="screenshots", prefix="x")) == []
    assert names(await list_keys(api, sid, collection="screenshots", exclusiveStartKey="shot-1")) == ["shot-2"]
    page = (await list_keys(api, sid, collection="screenshots", limit=1)).json()["data"]
    assert (names_ := [i["key"] for i in page["items"]]) == ["shot-1"] and page["nextExclusiveStartKey"] == names_[0]

    r = await api.client.get(records(sid), params={"collection": "screenshots"}, headers=api.auth())
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.namelist() == ["shot-1", "shot-2"]


async def test_unknown_collection_is_400(api: Api, schema_store: dict[str, Any], store: dict[str, Any]) -> None:
    assert_error(await list_keys(api, schema_store["id"], collection="nope"), 400, "invalid-collection")
    assert_error(await list_keys(api, store["id"], collection="screenshots"), 400, "invalid-collection")
    r = await api.client.get(records(schema_store["id"]), params={"collection": "nope"}, headers=api.auth())
    assert_error(r, 400, "invalid-collection")
