"""kvbox driven through the real `apify-client` package (sync and async), against `kvbox serve`.

Every key-value-store method of `ApifyClient` / `ApifyClientAsync` is exercised with the
client pointed at the server only through `api_url` / `api_public_url`.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import random
import string
import time
import warnings
import zlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import brotli
import httpx
import pytest
from apify_client import ApifyClient, ApifyClientAsync
from apify_client.errors import ApifyApiError

from backing_services import COMMAND_ENV, stored_objects

from .conftest import UserInfo, create_user

pytestmark = pytest.mark.slow

FORBIDDEN_MESSAGE = (
    "Insufficient permissions for the key-value store. Make sure you're passing a correct API token "
    "and that it has the required permissions."
)
SCHEMA: dict[str, Any] = {
    "actorKeyValueStoreSchemaVersion": 1,
    "title": "e2e schema",
    "collections": {
        "images": {"title": "Images", "keyPrefix": "img-", "contentTypes": ["image/*"]},
        "config": {"title": "Config", "key": "CONFIG", "contentTypes": ["application/json"]},
    },
}
INLINE_LIMIT = 64 * 1024
MANY_KEYS = 2100


def make_client(server: Any, token: str | None) -> ApifyClient:
    return ApifyClient(token, api_url=server.url, api_public_url=server.url)


def make_async_client(server: Any, token: str | None) -> ApifyClientAsync:
    return ApifyClientAsync(token, api_url=server.url, api_public_url=server.url)


def assert_api_error(err: ApifyApiError, status: int, type_: str | None = None, message: str | None = None) -> None:
    assert err.status_code == status, (err.status_code, err.type, err.message)
    if type_ is not None:
        assert err.type == type_, (err.type, err.message)
    if message is not None:
        assert err.message == message


def assert_forbidden(err: ApifyApiError) -> None:
    assert_api_error(err, 403, "insufficient-permissions", FORBIDDEN_MESSAGE)


def value_of(record: dict[str, Any] | None) -> Any:
    """The value of a record apify-client returned (it must exist)."""
    assert record is not None
    return record["value"]


def incompressible_text(n: int, seed: int) -> str:
    rnd = random.Random(seed)
    return "".join(rnd.choices(string.ascii_letters + string.digits, k=n))


def blob_sizes(data_dir: Path) -> set[int]:
    """Sizes of the record files under the data directory (bodies too large to be inline),
    or of the objects in the bucket for a scale-out server."""
    if data_dir in COMMAND_ENV:
        return set(stored_objects(COMMAND_ENV[data_dir]).values())
    root = data_dir / "blobs"
    return {p.stat().st_size for p in root.rglob("*") if p.is_file() and p.parent.name != "tmp"}


# KVBOX_E2E_BACKENDS=sqlite,postgres runs this whole suite once per backend (default: sqlite).
E2E_BACKENDS = [b.strip() for b in os.environ.get("KVBOX_E2E_BACKENDS", "sqlite").split(",") if b.strip()]


@pytest.fixture(scope="module", params=E2E_BACKENDS if E2E_BACKENDS != ["sqlite"] else None)
def server(request: pytest.FixtureRequest, server: Any) -> Any:
    """The session's SQLite server, or the PostgreSQL + S3 one."""
    backend = getattr(request, "param", "sqlite")
    if backend not in ("sqlite", "postgres"):
        raise ValueError(f"KVBOX_E2E_BACKENDS: unknown backend {backend!r} (sqlite, postgres)")
    return server if backend == "sqlite" else request.getfixturevalue("scale_out_server")


@pytest.fixture(scope="module")
def client(server: Any, alice: UserInfo) -> ApifyClient:
    return make_client(server, alice.token)


@pytest.fixture(scope="module")
def bob_client(server: Any, bob: UserInfo) -> ApifyClient:
    return make_client(server, bob.token)


@pytest.fixture(scope="module")
def anon_client(server: Any) -> ApifyClient:
    return make_client(server, None)


@pytest.fixture(scope="module")
def many_keys_store(client: ApifyClient) -> tuple[str, list[str]]:
    """A store with MANY_KEYS records, written concurrently through the sync client from a thread pool."""
    store = client.key_value_stores().get_or_create(name="many-keys-sync")
    kv = client.key_value_store(store.id)
    keys = [f"key-{i:05d}" for i in range(MANY_KEYS)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda k: kv.set_record(k, k), keys))
    return store.id, keys


# ----------------------------------------------------------------------------------------------
# Sync client: stores
# ----------------------------------------------------------------------------------------------


def test_get_or_create_named_unnamed_and_with_schema(client: ApifyClient, alice: UserInfo) -> None:
    stores = client.key_value_stores()
    first = stores.get_or_create(name="e2e-named")
    again = stores.get_or_create(name="e2e-named")
    assert first.id == again.id
    assert first.name == "e2e-named"
    assert first.username == alice.username
    assert len(first.id) == 17 and first.id.isalnum()
    assert first.url_signing_secret_key
    assert first.general_access == "FOLLOW_USER_SETTING"
    assert first.created_at.tzinfo is not None

    u1 = stores.get_or_create()
    u2 = stores.get_or_create()
    assert u1.id != u2.id
    assert u1.name is None and u2.name is None

    with_schema = stores.get_or_create(name="e2e-schema", schema=SCHEMA)
    assert with_schema.schema_ == SCHEMA
    fetched = client.key_value_store(with_schema.id).get()
    assert fetched is not None and fetched.schema_ == SCHEMA

    # A schema of >= 1 KiB makes the client gzip the JSON body.
    big_schema = {**SCHEMA, "description": "a long description. " * 200}
    big = stores.get_or_create(name="e2e-big-schema", schema=big_schema)
    assert big.schema_ == big_schema

    with pytest.raises(ApifyApiError) as exc:
        stores.get_or_create(name="not a valid name!")
    assert_api_error(exc.value, 400)


def test_list_and_iterate_stores(server: Any) -> None:
    carol = create_user(server.data_dir, "carol")
    client = make_client(server, carol.token)
    stores = client.key_value_stores()
    named, unnamed = [], []
    for i in range(3):
        named.append(stores.get_or_create(name=f"list-{i}").id)
        time.sleep(0.003)
        unnamed.append(stores.get_or_create().id)
        time.sleep(0.003)
    everything = [s for pair in zip(named, unnamed, strict=True) for s in pair]

    page = stores.list()
    assert (page.total, page.count, page.offset, page.limit, page.desc) == (3, 3, 0, 1000, False)
    assert [s.id for s in page.items] == named
    assert all(s.name for s in page.items)

    page = stores.list(unnamed=True)
    assert page.total == 6
    assert [s.id for s in page.items] == everything

    page = stores.list(limit=2)
    assert (page.total, page.count, page.limit) == (3, 2, 2)
    assert [s.id for s in page.items] == named[:2]

    page = stores.list(offset=1)
    assert (page.offset, page.count) == (1, 2)
    assert [s.id for s in page.items] == named[1:]

    page = stores.list(desc=True)
    assert page.desc is True
    assert [s.id for s in page.items] == named[::-1]

    page = stores.list(unnamed=True, desc=True, limit=2, offset=1)
    assert [s.id for s in page.items] == everything[::-1][1:3]

    # iterate() without a limit sends limit=0, which the server must treat as "default".
    assert [s.id for s in stores.iterate()] == named
    assert [s.id for s in stores.iterate(unnamed=True)] == everything
    assert [s.id for s in stores.iterate(unnamed=True, chunk_size=2)] == everything
    assert [s.id for s in stores.iterate(unnamed=True, limit=4)] == everything[:4]
    assert [s.id for s in stores.iterate(unnamed=True, offset=2, chunk_size=3)] == everything[2:]
    assert [s.id for s in stores.iterate(desc=True)] == named[::-1]

    # Raw: limit=0 is accepted and echoed as an effective limit >= 1.
    r = httpx.get(
        f"{server.url}/v2/key-value-stores",
        params={"limit": 0},
        headers={"Authorization": f"Bearer {carol.token}"},
        timeout=10,
    )
    assert r.status_code == 200 and r.json()["data"]["limit"] >= 1


def test_get_store_by_id_and_name_and_missing(client: ApifyClient, alice: UserInfo) -> None:
    store = client.key_value_stores().get_or_create(name="e2e-get")
    by_id = client.key_value_store(store.id).get()
    assert by_id is not None and by_id.id == store.id
    by_name = client.key_value_store(f"{alice.username}/e2e-get").get()
    assert by_name is not None and by_name.id == store.id
    own_name = client.key_value_store("~e2e-get").get()
    assert own_name is not None and own_name.id == store.id

    assert client.key_value_store("AAAAAAAAAAAAAAAAA").get() is None
    assert client.key_value_store(f"{alice.username}/no-such-store").get() is None


def test_update_store(client: ApifyClient, bob_client: ApifyClient, anon_client: ApifyClient, alice: UserInfo) -> None:
    store = client.key_value_stores().get_or_create(name="e2e-update")
    kv = client.key_value_store(store.id)
    kv.set_record("hello", "world")

    renamed = kv.update(name="e2e-update-renamed")
    assert renamed.id == store.id and renamed.name == "e2e-update-renamed"
    assert client.key_value_stores().get_or_create(name="e2e-update-renamed").id == store.id

    unchanged = kv.update()  # sends {}
    assert unchanged.name == "e2e-update-renamed"

    # Restricted (the default for a new user) -> another user gets 403.
    with pytest.raises(ApifyApiError) as exc:
        bob_client.key_value_store(store.id).get_record("hello")
    assert_forbidden(exc.value)

    public = kv.update(general_access="ANYONE_WITH_ID_CAN_READ")
    assert public.general_access == "ANYONE_WITH_ID_CAN_READ"
    rec = bob_client.key_value_store(store.id).get_record("hello")
    assert rec is not None and rec["value"] == "world"
    # ...but reading is all it grants.
    with pytest.raises(ApifyApiError) as exc:
        bob_client.key_value_store(store.id).set_record("hello", "bob was here")
    assert_forbidden(exc.value)
    with pytest.raises(ApifyApiError) as exc:
        bob_client.key_value_store(store.id).update(name="stolen")
    assert_forbidden(exc.value)

    # ID-readable is not name-readable.
    with pytest.raises(ApifyApiError) as exc:
        anon_client.key_value_store(f"{alice.username}/e2e-update-renamed").get_record("hello")
    assert_forbidden(exc.value)
    kv.update(general_access="ANYONE_WITH_NAME_CAN_READ")
    rec = anon_client.key_value_store(f"{alice.username}/e2e-update-renamed").get_record("hello")
    assert rec is not None and rec["value"] == "world"
    assert [k.key for k in anon_client.key_value_store(store.id).list_keys().items] == ["hello"]

    restricted = kv.update(general_access="RESTRICTED")
    assert restricted.general_access == "RESTRICTED"
    with pytest.raises(ApifyApiError) as exc:
        bob_client.key_value_store(store.id).get_record("hello")
    assert_forbidden(exc.value)

    with pytest.raises(ApifyApiError) as exc:
        kv.update(general_access="NOT_A_VALUE")
    assert_api_error(exc.value, 400)


def test_delete_store_twice_is_harmless(client: ApifyClient, bob_client: ApifyClient) -> None:
    store = client.key_value_stores().get_or_create()
    kv = client.key_value_store(store.id)
    kv.set_record("a", "b")

    with pytest.raises(ApifyApiError) as exc:
        bob_client.key_value_store(store.id).delete()
    assert_forbidden(exc.value)

    kv.delete()
    assert kv.get() is None
    kv.delete()  # 404 swallowed by the client
    assert kv.get_record("a") is None
    assert kv.record_exists("a") is False
    with pytest.raises(ApifyApiError) as exc:
        kv.list_keys()
    assert_api_error(exc.value, 404, "record-not-found")
    with pytest.raises(ApifyApiError) as exc:
        kv.set_record("a", "b")
    assert_api_error(exc.value, 404, "record-not-found")


# ----------------------------------------------------------------------------------------------
# Sync client: records
# ----------------------------------------------------------------------------------------------


def test_record_roundtrip_value_types(client: ApifyClient) -> None:
    kv = client.key_value_store(client.key_value_stores().get_or_create().id)
    obj = {"a": 1, "ünï": ["x", 2.5, None, True], "nested": {"k": "v"}}
    kv.set_record("json", obj)
    kv.set_record("text", "héllo wörld")
    kv.set_record("bin", bytes(range(256)))
    kv.set_record("xml", "<a>1</a>", content_type="application/xml")
    kv.set_record("png", b"\x89PNG\r\n\x1a\n....", content_type="image/png")
    kv.set_record("_underscore", "ok")
    kv.set_record("odd!-_.'()", "chars")

    rec = kv.get_record("json")
    assert rec == {"key": "json", "value": obj, "content_type": "application/json; charset=utf-8"}
    rec = kv.get_record("text")
    assert rec == {"key": "text", "value": "héllo wörld", "content_type": "text/plain; charset=utf-8"}
    rec = kv.get_record("bin")
    assert rec == {"key": "bin", "value": bytes(range(256)), "content_type": "application/octet-stream"}
    rec = kv.get_record("xml")
    assert rec is not None and rec["value"] == "<a>1</a>" and rec["content_type"] == "application/xml"
    rec = kv.get_record("png")
    assert rec is not None and rec["value"] == b"\x89PNG\r\n\x1a\n...." and rec["content_type"] == "image/png"
    assert value_of(kv.get_record("_underscore")) == "ok"
    assert value_of(kv.get_record("odd!-_.'()")) == "chars"

    # Stored as sent, never re-serialised.
    raw = kv.get_record_as_bytes("json")
    expected = json.dumps(obj, ensure_ascii=False, allow_nan=False, default=str).encode()
    assert raw == {"key": "json", "value": expected, "content_type": "application/json; charset=utf-8"}
    assert value_of(kv.get_record_as_bytes("text")) == "héllo wörld".encode()

    with kv.stream_record("bin") as streamed:
        assert streamed is not None
        assert streamed["content_type"] == "application/octet-stream"
        assert b"".join(streamed["value"].iter_bytes()) == bytes(range(256))

    kv.set_record("text", "second version")
    assert value_of(kv.get_record("text")) == "second version"

    assert kv.record_exists("json") is True
    assert kv.record_exists("missing") is False
    assert kv.get_record("missing") is None
    assert kv.get_record_as_bytes("missing") is None
    with kv.stream_record("missing") as streamed:
        assert streamed is None

    gone = client.key_value_store("AAAAAAAAAAAAAAAAA")
    assert gone.get_record("x") is None
    assert gone.record_exists("x") is False


def test_large_records_are_compressed_by_client_and_stored_in_files(
    client: ApifyClient, server: Any, alice: UserInfo
) -> None:
    store_id = client.key_value_stores().get_or_create().id
    kv = client.key_value_store(store_id)
    data = os.urandom(200 * 1024)
    text = incompressible_text(300 * 1024, seed=7)
    kv.set_record("large-bin", data)
    kv.set_record("large-text", text)

    assert value_of(kv.get_record("large-bin")) == data
    assert value_of(kv.get_record("large-text")) == text
    assert value_of(kv.get_record_as_bytes("large-text")) == text.encode()
    with kv.stream_record("large-bin") as streamed:
        assert streamed is not None
        assert b"".join(streamed["value"].iter_bytes()) == data

    # The Apify SDK's setting: request bodies compressed with brotli.
    br_client = ApifyClient(alice.token, api_url=server.url, api_public_url=server.url, compression="brotli")
    br_client.key_value_store(store_id).set_record("large-br", text)
    assert value_of(kv.get_record("large-br")) == text

    sizes = {item.key: item.size for item in kv.list_keys().items}
    # The client gzips bodies >= 1 KiB; both stay above the inline threshold after compression.
    assert sizes["large-bin"] > INLINE_LIMIT and sizes["large-text"] > INLINE_LIMIT
    assert sizes["large-text"] < len(text)  # stored as uploaded (compressed), not re-expanded
    on_disk = blob_sizes(server.data_dir)
    assert sizes["large-bin"] in on_disk and sizes["large-text"] in on_disk

    # A caller that does not accept gzip gets it decompressed on the fly.
    url = f"{server.url}/v2/key-value-stores/{kv.resource_id}/records/large-text"
    token_header = {"Authorization": f"Bearer {alice.token}"}
    r = httpx.get(url, headers={**token_header, "Accept-Encoding": "identity"}, timeout=30)
    assert r.status_code == 200 and "content-encoding" not in r.headers
    assert r.content == text.encode()
    with httpx.stream("GET", url, headers={**token_header, "Accept-Encoding": "gzip"}, timeout=30) as r:
        assert r.headers["content-encoding"] == "gzip"
        assert b"".join(r.iter_raw()) != text.encode()


def test_precompressed_uploads_read_back_as_original(client: ApifyClient) -> None:
    kv = client.key_value_store(client.key_value_stores().get_or_create().id)
    original = ("payload line\n" * 500).encode()
    kv.set_record("gz", gzip.compress(original), content_type="text/plain; charset=utf-8", content_encoding="gzip")
    kv.set_record("br", brotli.compress(original), content_type="text/plain; charset=utf-8", content_encoding="br")
    kv.set_record("zz", zlib.compress(original), content_type="application/octet-stream", content_encoding="deflate")
    kv.set_record("id", original, content_type="text/plain; charset=utf-8", content_encoding="identity")

    for key in ("gz", "br", "id"):
        rec = kv.get_record(key)
        assert rec is not None and rec["value"] == original.decode(), key
        assert value_of(kv.get_record_as_bytes(key)) == original
    assert value_of(kv.get_record("zz")) == original

    with pytest.raises(ApifyApiError) as exc:
        kv.set_record("bad", b"abc", content_encoding="compress")
    assert_api_error(exc.value, 415, "unsupported-content-encoding")
    with pytest.raises(ApifyApiError) as exc:
        kv.set_record("bad", b"definitely not gzip", content_encoding="gzip")
    assert_api_error(exc.value, 400)
    assert kv.record_exists("bad") is False


# apify-client warns that streamed request bodies are experimental; they are what this test drives.
@pytest.mark.filterwarnings("ignore:Streaming a request body is experimental")
def test_streamed_uploads(client: ApifyClient, tmp_path: Path) -> None:
    """File-like values and chunk iterables go up chunked (no Content-Length, never compressed)."""
    kv = client.key_value_store(client.key_value_stores().get_or_create().id)
    data = os.urandom(300 * 1024)
    kv.set_record("bytesio", io.BytesIO(data))
    path = tmp_path / "upload.bin"
    path.write_bytes(data[:100_000])
    with path.open("rb") as f:
        kv.set_record("file", f)
    text_path = tmp_path / "upload.txt"
    text_path.write_text("tëxt file\n" * 100, encoding="utf-8")
    with text_path.open(encoding="utf-8") as f:
        kv.set_record("textfile", f)
    kv.set_record("chunks", iter([b"ab", b"", b"cd" * 40_000]), content_type="text/plain; charset=utf-8")
    original = ("streamed and gzipped\n" * 2000).encode()
    kv.set_record("gz-stream", io.BytesIO(gzip.compress(original)), content_type="text/plain", content_encoding="gzip")

    assert kv.get_record("bytesio") == {"key": "bytesio", "value": data, "content_type": "application/octet-stream"}
    assert value_of(kv.get_record("file")) == data[:100_000]
    rec = kv.get_record("textfile")
    assert rec is not None and rec["value"] == "tëxt file\n" * 100
    assert rec["content_type"] == "text/plain; charset=utf-8"
    assert value_of(kv.get_record("chunks")) == "ab" + "cd" * 40_000
    assert value_of(kv.get_record("gz-stream")) == original.decode()

    # Pipe one record into another straight from the streamed response.
    with kv.stream_record("bytesio") as streamed:
        assert streamed is not None
        kv.set_record("copy", streamed["value"], content_type=streamed["content_type"])
    assert value_of(kv.get_record_as_bytes("copy")) == data
    sizes = {i.key: i.size for i in kv.list_keys().items}
    assert sizes["bytesio"] == sizes["copy"] == len(data)


def test_delete_record(client: ApifyClient) -> None:
    kv = client.key_value_store(client.key_value_stores().get_or_create().id)
    kv.set_record("doomed", {"x": 1})
    kv.set_record("big-doomed", os.urandom(100 * 1024))
    assert kv.record_exists("doomed")
    kv.delete_record("doomed")
    kv.delete_record("big-doomed")
    assert kv.record_exists("doomed") is False
    assert kv.get_record("doomed") is None
    assert kv.get_record("big-doomed") is None
    assert kv.list_keys().items == []
    # kvbox answers 204 for a missing record, so the client's delete_record does not raise.
    kv.delete_record("doomed")


def test_list_keys(client: ApifyClient, server: Any) -> None:
    store = client.key_value_stores().get_or_create(name="e2e-keys", schema=SCHEMA)
    kv = client.key_value_store(store.id)
    values = {f"a-{i}": "v" * i for i in range(1, 6)}
    values.update({f"b-{i}": "w" for i in range(1, 4)})
    for key, value in values.items():
        kv.set_record(key, value)
    kv.set_record("img-1", b"\x89PNG1", content_type="image/png")
    kv.set_record("img-2", b"GIF89a", content_type="image/gif")
    kv.set_record("CONFIG", {"debug": True})
    every = sorted([*values, "img-1", "img-2", "CONFIG"])

    page = kv.list_keys()
    assert [i.key for i in page.items] == every
    assert page.count == len(every) and page.limit == 1000
    assert page.is_truncated is False and page.next_exclusive_start_key is None
    assert page.exclusive_start_key is None
    sizes = {i.key: i.size for i in page.items}
    assert all(sizes[f"a-{i}"] == i for i in range(1, 6))
    for item in page.items:
        url = str(item.record_public_url)
        assert url.startswith(f"{server.url}/v2/key-value-stores/{store.id}/records/{item.key}?signature=")

    first = kv.list_keys(limit=3)
    assert [i.key for i in first.items] == every[:3]
    assert (first.count, first.limit, first.is_truncated) == (3, 3, True)
    assert first.next_exclusive_start_key == every[2]
    second = kv.list_keys(exclusive_start_key=first.next_exclusive_start_key)
    assert [i.key for i in second.items] == every[3:]
    assert second.exclusive_start_key == every[2] and second.is_truncated is False
    assert second.next_exclusive_start_key is None
    # Small pages through the client's cursor loop (islice bounds it even if a cursor repeated keys).
    assert list(islice((k.key for k in kv.iterate_keys(chunk_size=2)), len(every) + 5)) == every
    assert [k.key for k in kv.iterate_keys(chunk_size=1, limit=5)] == every[:5]

    assert [i.key for i in kv.list_keys(prefix="b-").items] == ["b-1", "b-2", "b-3"]
    page = kv.list_keys(prefix="a-", limit=2, exclusive_start_key="a-2")
    assert [i.key for i in page.items] == ["a-3", "a-4"] and page.is_truncated is True
    assert [i.key for i in kv.list_keys(exclusive_start_key="a-3x", prefix="a-").items] == ["a-4", "a-5"]
    assert kv.list_keys(prefix="zzz").items == []

    assert [i.key for i in kv.list_keys(collection="images").items] == ["img-1", "img-2"]
    assert [i.key for i in kv.list_keys(collection="config").items] == ["CONFIG"]
    with pytest.raises(ApifyApiError) as exc:
        kv.list_keys(collection="no-such-collection")
    assert_api_error(exc.value, 400)

    # The schema is enforced on writes into a collection.
    with pytest.raises(ApifyApiError) as exc:
        kv.set_record("img-3", "not an image")
    assert_api_error(exc.value, 400)
    assert kv.record_exists("img-3") is False


def test_iterate_keys_over_many_pages(client: ApifyClient, many_keys_store: tuple[str, list[str]]) -> None:
    store_id, keys = many_keys_store
    kv = client.key_value_store(store_id)
    assert [k.key for k in kv.iterate_keys()] == keys
    assert [k.key for k in kv.iterate_keys(limit=1500)] == keys[:1500]
    assert [k.key for k in kv.iterate_keys(chunk_size=700)] == keys
    assert [k.key for k in kv.iterate_keys(prefix="key-01")] == [k for k in keys if k.startswith("key-01")]
    assert [k.key for k in kv.iterate_keys(exclusive_start_key="key-02049")] == keys[2050:]
    assert value_of(kv.get_record("key-01234")) == "key-01234"


def test_public_urls(client: ApifyClient, server: Any) -> None:
    store = client.key_value_stores().get_or_create(name="e2e-public")
    kv = client.key_value_store(store.id)
    assert store.general_access == "FOLLOW_USER_SETTING"  # -> the user's default, RESTRICTED
    body = os.urandom(3000)
    kv.set_record("pub", body, content_type="application/x-custom")
    odd_key = "it's(1)!"
    kv.set_record(odd_key, "odd key")
    kv.set_record("other", "x")

    url = kv.get_record_public_url("pub")
    assert url.startswith(f"{server.url}/v2/key-value-stores/{store.id}/records/pub?signature=")
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200, r.text
    assert r.content == body and r.headers["content-type"] == "application/x-custom"

    odd_url = kv.get_record_public_url(odd_key)
    r = httpx.get(odd_url, timeout=10)
    assert r.status_code == 200 and r.text == "odd key"

    unsigned = f"{server.url}/v2/key-value-stores/{store.id}/records/pub"
    assert httpx.get(unsigned, timeout=10).status_code == 403
    assert httpx.get(unsigned + "?signature=AAAAAAAAAAAAAAAAAAA", timeout=10).status_code == 403
    # A record signature is bound to its key.
    sig = parse_qs(urlsplit(url).query)["signature"][0]
    r = httpx.get(f"{server.url}/v2/key-value-stores/{store.id}/records/other", params={"signature": sig}, timeout=10)
    assert r.status_code == 403

    keys_url = kv.create_keys_public_url(expires_in=timedelta(minutes=10))
    assert keys_url.startswith(f"{server.url}/v2/key-value-stores/{store.id}/keys?")
    r = httpx.get(keys_url, timeout=10)
    assert r.status_code == 200, r.text
    assert [i["key"] for i in r.json()["data"]["items"]] == sorted(["pub", odd_key, "other"])

    limited = kv.create_keys_public_url(limit=1, prefix="o", expires_in=timedelta(minutes=10))
    r = httpx.get(limited, timeout=10)
    assert r.status_code == 200 and [i["key"] for i in r.json()["data"]["items"]] == ["other"]

    forever = kv.create_keys_public_url()
    assert httpx.get(forever, timeout=10).status_code == 200

    expired = kv.create_keys_public_url(expires_in=timedelta(seconds=-60))
    assert httpx.get(expired, timeout=10).status_code == 403
    tampered = keys_url.replace("signature=", "signature=x")
    assert httpx.get(tampered, timeout=10).status_code == 403
    assert httpx.get(f"{server.url}/v2/key-value-stores/{store.id}/keys", timeout=10).status_code == 403

    # The store's own keysPublicUrl (expiring after 14 days) works anonymously, too.
    fetched = kv.get()
    assert fetched is not None and fetched.keys_public_url is not None
    assert httpx.get(str(fetched.keys_public_url), timeout=10).status_code == 200

    # The signed recordPublicUrl in a key listing also works anonymously.
    item = next(i for i in kv.list_keys().items if i.key == odd_key)
    r = httpx.get(str(item.record_public_url), timeout=10)
    assert r.status_code == 200 and r.text == "odd key"


def test_errors(client: ApifyClient, bob_client: ApifyClient, anon_client: ApifyClient, server: Any) -> None:
    store = client.key_value_stores().get_or_create(name="e2e-private")
    kv = client.key_value_store(store.id)
    kv.set_record("secret", {"s": 1})
    theirs = bob_client.key_value_store(store.id)

    for call in (
        theirs.list_keys,
        lambda: theirs.get_record("secret"),
        lambda: theirs.get_record_as_bytes("secret"),
        lambda: theirs.get_record("no-such-record"),
        theirs.get,
        lambda: theirs.set_record("secret", "overwrite"),
        lambda: theirs.delete_record("secret"),
        lambda: list(theirs.iterate_keys()),
        lambda: theirs.get_record_public_url("secret"),
    ):
        with pytest.raises(ApifyApiError) as exc:
            call()
        assert_forbidden(exc.value)

    with pytest.raises(ApifyApiError) as exc, theirs.stream_record("secret"):
        pass
    assert_forbidden(exc.value)

    # HEAD carries no body, so only the status is visible.
    with pytest.raises(ApifyApiError) as exc:
        theirs.record_exists("secret")
    assert exc.value.status_code == 403

    # By name, too.
    with pytest.raises(ApifyApiError) as exc:
        bob_client.key_value_store(f"{store.username}/e2e-private").get_record("secret")
    assert_forbidden(exc.value)

    # Nothing changed.
    assert value_of(kv.get_record("secret")) == {"s": 1}

    # Anonymous: reads are forbidden, writes need a token.
    with pytest.raises(ApifyApiError) as exc:
        anon_client.key_value_store(store.id).get_record("secret")
    assert_forbidden(exc.value)
    with pytest.raises(ApifyApiError) as exc:
        anon_client.key_value_store(store.id).set_record("secret", "x")
    assert_api_error(exc.value, 401, "token-not-provided")
    with pytest.raises(ApifyApiError) as exc:
        anon_client.key_value_stores().list()
    assert_api_error(exc.value, 401, "token-not-provided")

    with pytest.raises(ApifyApiError) as exc:
        make_client(server, "not-a-real-token-at-all").key_value_stores().list()
    assert_api_error(exc.value, 401, "invalid-token")

    # Invalid keys -> 400 invalid-record-key.
    for bad in ("has space", "slash/inside", "tilde~", "x" * 257, "ünicode", "q?mark", "hash#"):
        with pytest.raises(ApifyApiError) as exc:
            kv.set_record(bad, "v")
        assert_api_error(exc.value, 400, "invalid-record-key")
        with pytest.raises(ApifyApiError) as exc:
            kv.get_record(bad)
        assert_api_error(exc.value, 400, "invalid-record-key")
    kv.set_record("x" * 256, "longest key")
    assert value_of(kv.get_record("x" * 256)) == "longest key"


# ----------------------------------------------------------------------------------------------
# Async client
# ----------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_stores(server: Any) -> None:
    dave = await asyncio.to_thread(create_user, server.data_dir, "dave")
    client = make_async_client(server, dave.token)
    stores = client.key_value_stores()

    named = await stores.get_or_create(name="async-a")
    assert (await stores.get_or_create(name="async-a")).id == named.id
    await asyncio.sleep(0.003)
    unnamed = await stores.get_or_create()
    await asyncio.sleep(0.003)
    second = await stores.get_or_create(name="async-b", schema=SCHEMA)
    assert second.schema_ == SCHEMA and unnamed.name is None

    page = await stores.list()
    assert page.total == 2 and [s.id for s in page.items] == [named.id, second.id]
    page = await stores.list(unnamed=True, desc=True, limit=2)
    assert page.total == 3 and [s.id for s in page.items] == [second.id, unnamed.id]
    page = await stores.list(unnamed=True, offset=1)
    assert [s.id for s in page.items] == [unnamed.id, second.id]
    assert [s.id async for s in stores.iterate(unnamed=True)] == [named.id, unnamed.id, second.id]
    assert [s.id async for s in stores.iterate(unnamed=True, chunk_size=1)] == [named.id, unnamed.id, second.id]
    assert [s.id async for s in stores.iterate(desc=True)] == [second.id, named.id]

    kv = client.key_value_store(named.id)
    got = await kv.get()
    assert got is not None and got.name == "async-a"
    by_name = await client.key_value_store(f"{dave.username}/async-a").get()
    assert by_name is not None and by_name.id == named.id
    assert await client.key_value_store("AAAAAAAAAAAAAAAAA").get() is None

    updated = await kv.update(name="async-a-renamed", general_access="ANYONE_WITH_ID_CAN_READ")
    assert updated.name == "async-a-renamed" and updated.general_access == "ANYONE_WITH_ID_CAN_READ"
    await kv.set_record("k", "v")
    anon = make_async_client(server, None)
    rec = await anon.key_value_store(named.id).get_record("k")
    assert rec is not None and rec["value"] == "v"

    await kv.delete()
    assert await kv.get() is None
    await kv.delete()
    assert await kv.get_record("k") is None


@pytest.mark.anyio
async def test_async_records(server: Any, alice: UserInfo) -> None:
    client = make_async_client(server, alice.token)
    store = await client.key_value_stores().get_or_create(name="async-records", schema=SCHEMA)
    kv = client.key_value_store(store.id)

    obj = {"hello": ["wörld", 1]}
    large = os.urandom(150 * 1024)
    original = ("compressed already\n" * 300).encode()
    await asyncio.gather(
        kv.set_record("json", obj),
        kv.set_record("text", "plain text"),
        kv.set_record("bytes", b"\x00\x01\x02"),
        kv.set_record("large", large),
        kv.set_record("gz", gzip.compress(original), content_type="text/plain", content_encoding="gzip"),
        kv.set_record("img-1", b"\x89PNG", content_type="image/png"),
    )
    assert (await kv.get_record("json")) == {
        "key": "json",
        "value": obj,
        "content_type": "application/json; charset=utf-8",
    }
    assert value_of(await kv.get_record("text")) == "plain text"
    assert value_of(await kv.get_record("bytes")) == b"\x00\x01\x02"
    assert value_of(await kv.get_record("large")) == large
    assert value_of(await kv.get_record("gz")) == original.decode()
    assert value_of(await kv.get_record_as_bytes("gz")) == original
    assert value_of(await kv.get_record_as_bytes("json")) == json.dumps(obj, ensure_ascii=False).encode()
    assert await kv.get_record("missing") is None
    assert await kv.get_record_as_bytes("missing") is None

    async with kv.stream_record("large") as streamed:
        assert streamed is not None
        chunks = [c async for c in streamed["value"].aiter_bytes()]
        assert b"".join(chunks) == large
    async with kv.stream_record("missing") as streamed:
        assert streamed is None

    assert await kv.record_exists("large") is True
    assert await kv.record_exists("missing") is False

    page = await kv.list_keys(limit=2)
    assert [i.key for i in page.items] == ["bytes", "gz"] and page.is_truncated
    page = await kv.list_keys(exclusive_start_key=page.next_exclusive_start_key)
    assert [i.key for i in page.items] == ["img-1", "json", "large", "text"] and not page.is_truncated
    assert [i.key for i in (await kv.list_keys(prefix="j")).items] == ["json"]
    assert [i.key for i in (await kv.list_keys(collection="images")).items] == ["img-1"]
    large_item = next(i for i in (await kv.list_keys()).items if i.key == "large")
    assert large_item.size > INLINE_LIMIT

    async def text_chunks() -> AsyncIterator[bytes]:
        for i in range(50):
            yield f"chunk {i};".encode() * 200

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Streaming a request body is experimental")
        await kv.set_record("agen", text_chunks(), content_type="text/plain")
        await kv.set_record("aio", io.BytesIO(large))
    expected_text = "".join(f"chunk {i};" * 200 for i in range(50))
    assert value_of(await kv.get_record("agen")) == expected_text
    assert value_of(await kv.get_record("aio")) == large
    await kv.delete_record("agen")
    await kv.delete_record("aio")

    await kv.delete_record("json")
    assert await kv.record_exists("json") is False
    assert await kv.get_record("json") is None

    url = await kv.get_record_public_url("large")
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(url)
        assert r.status_code == 200 and r.content == large
        keys_url = await kv.create_keys_public_url(expires_in=timedelta(minutes=5), prefix="t")
        r = await http.get(keys_url)
        assert r.status_code == 200 and [i["key"] for i in r.json()["data"]["items"]] == ["text"]
        expired = await kv.create_keys_public_url(expires_in=timedelta(seconds=-5))
        assert (await http.get(expired)).status_code == 403


@pytest.mark.anyio
async def test_async_iterate_keys_written_with_gather(server: Any, alice: UserInfo) -> None:
    client = make_async_client(server, alice.token)
    store = await client.key_value_stores().get_or_create(name="many-keys-async")
    kv = client.key_value_store(store.id)
    keys = [f"k{i:05d}" for i in range(MANY_KEYS)]
    limiter = asyncio.Semaphore(32)

    async def put(key: str) -> None:
        async with limiter:
            await kv.set_record(key, {"key": key})

    await asyncio.gather(*(put(k) for k in keys))
    assert [k.key async for k in kv.iterate_keys()] == keys
    assert [k.key async for k in kv.iterate_keys(limit=1234)] == keys[:1234]
    assert [k.key async for k in kv.iterate_keys(chunk_size=999, exclusive_start_key="k00100")] == keys[101:]
    assert [k.key async for k in kv.iterate_keys(prefix="k020")] == keys[2000:2100]
    assert value_of(await kv.get_record("k02099")) == {"key": "k02099"}


@pytest.mark.anyio
async def test_async_errors(server: Any, alice: UserInfo, bob: UserInfo) -> None:
    client = make_async_client(server, alice.token)
    store = await client.key_value_stores().get_or_create(name="async-private")
    await client.key_value_store(store.id).set_record("secret", "s")
    theirs = make_async_client(server, bob.token).key_value_store(store.id)

    with pytest.raises(ApifyApiError) as exc:
        await theirs.list_keys()
    assert_forbidden(exc.value)
    with pytest.raises(ApifyApiError) as exc:
        await theirs.get_record("secret")
    assert_forbidden(exc.value)
    with pytest.raises(ApifyApiError) as exc:
        await theirs.get_record_as_bytes("secret")
    assert_forbidden(exc.value)
    with pytest.raises(ApifyApiError) as exc:
        async with theirs.stream_record("secret"):
            pass
    assert_forbidden(exc.value)
    with pytest.raises(ApifyApiError) as exc:
        await theirs.set_record("secret", "mine now")
    assert_forbidden(exc.value)
    with pytest.raises(ApifyApiError) as exc:
        await theirs.record_exists("secret")
    assert exc.value.status_code == 403

    kv = client.key_value_store(store.id)
    with pytest.raises(ApifyApiError) as exc:
        await kv.set_record("bad key", "v")
    assert_api_error(exc.value, 400, "invalid-record-key")
    with pytest.raises(ApifyApiError) as exc:
        await kv.get_record("bad*key")
    assert_api_error(exc.value, 400, "invalid-record-key")


# ----------------------------------------------------------------------------------------------
# Record lifecycle: what the unmodified client sees of kvbox's extensions
# ----------------------------------------------------------------------------------------------


def test_a_store_rule_expires_what_the_unmodified_client_writes(
    client: ApifyClient, server: Any, alice: UserInfo
) -> None:
    store = client.key_value_stores().get_or_create(name="e2e-expiry-rule")
    # The official client never sends recordExpiry: the store's owner sets it once by other means.
    rules = [{"prefix": "tmp-", "expireAfterSecs": 1}]
    r = httpx.put(f"{server.url}/v2/key-value-stores/{store.id}", json={"recordExpiry": rules},
                  headers={"Authorization": f"Bearer {alice.token}"}, timeout=10)  # fmt: skip
    assert r.status_code == 200 and r.json()["data"]["recordExpiry"] == rules
    kv = client.key_value_store(store.id)
    fetched = kv.get()  # the store object carries the extra field; the client takes it in its stride
    assert fetched is not None and fetched.id == store.id
    kv.set_record("tmp-page", {"cached": True})
    kv.set_record("keep", "kept")
    assert value_of(kv.get_record("tmp-page")) == {"cached": True}
    assert sorted(item.key for item in kv.list_keys().items) == ["keep", "tmp-page"]
    deadline = time.monotonic() + 15
    while kv.get_record("tmp-page") is not None:
        assert time.monotonic() < deadline, "the record did not expire"
        time.sleep(0.2)
    assert kv.record_exists("tmp-page") is False
    assert [item.key for item in kv.list_keys().items] == ["keep"]
    kv.set_record("tmp-page", {"cached": "again"})  # a new write starts its own second
    assert value_of(kv.get_record("tmp-page")) == {"cached": "again"}
    r = httpx.delete(f"{server.url}/v2/key-value-stores/{store.id}/records", params={"prefix": "tmp-"},
                     headers={"Authorization": f"Bearer {alice.token}"}, timeout=10)  # fmt: skip
    assert r.json() == {"data": {"deletedCount": 1}}
    assert kv.get_record("tmp-page") is None
    assert [item.key for item in kv.list_keys().items] == ["keep"]
