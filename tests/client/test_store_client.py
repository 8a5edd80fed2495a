"""The synchronous client against a real `kvbox serve` process: every key-value-store operation."""

from __future__ import annotations

import io
import zipfile
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from conftest import ServerProcess
from kvbox.client import (
    ApiError,
    InvalidRequestError,
    KvboxClient,
    NotFoundError,
    StoreClient,
    UnauthorizedError,
)
from kvbox.core.signatures import sign_record

from .conftest import unique_name


def test_get_or_create_returns_the_same_store_for_a_name(client: KvboxClient) -> None:
    name = unique_name()
    first = client.key_value_stores().get_or_create(name)
    again = client.key_value_stores().get_or_create(name)
    assert first.id == again.id
    assert first.name == name
    assert first.created_at is not None and first.created_at.tzinfo is not None
    assert first.url_signing_secret_key
    client.key_value_store(first.id).delete()


def test_get_by_id_and_by_tilde_name(client: KvboxClient, store: StoreClient) -> None:
    info = store.get()
    assert info is not None
    by_name = client.key_value_store(f"~{info.name}").get()
    assert by_name is not None and by_name.id == info.id


def test_get_missing_store_is_none(client: KvboxClient) -> None:
    assert client.key_value_store("no-such-store-ever").get() is None


def test_list_and_iterate_stores(client: KvboxClient) -> None:
    names = sorted(unique_name("list") for _ in range(3))
    ids = [client.key_value_stores().get_or_create(n).id for n in names]
    page = client.key_value_stores().list(limit=1)
    assert page.count == 1 and page.limit == 1 and page.total >= 3
    listed = {s.id for s in client.key_value_stores().iterate(chunk_size=2)}
    assert set(ids) <= listed
    assert len(list(client.key_value_stores().iterate(limit=2, chunk_size=1))) == 2
    for store_id in ids:
        client.key_value_store(store_id).delete()


def test_update_renames_and_unnames(client: KvboxClient, store: StoreClient) -> None:
    new_name = unique_name("renamed")
    assert store.update(name=new_name).name == new_name
    assert store.update(general_access="ANYONE_WITH_ID_CAN_READ").general_access == "ANYONE_WITH_ID_CAN_READ"
    assert store.update(name=None).name is None


def test_delete_store_twice_is_fine(client: KvboxClient) -> None:
    info = client.key_value_stores().get_or_create(unique_name())
    client.key_value_store(info.id).delete()
    client.key_value_store(info.id).delete()
    assert client.key_value_store(info.id).get() is None


@pytest.mark.parametrize(
    ("value", "content_type", "expected", "stored_type"),
    [
        ({"a": [1, 2, {"b": None}]}, None, {"a": [1, 2, {"b": None}]}, "application/json; charset=utf-8"),
        ([1, "two"], None, [1, "two"], "application/json; charset=utf-8"),
        (42, None, 42, "application/json; charset=utf-8"),
        ("héllo", None, "héllo", "text/plain; charset=utf-8"),
        (b"\x00\xff", None, b"\x00\xff", "application/octet-stream"),
        ("<p>x</p>", "text/html", "<p>x</p>", "text/html"),
        ("<a/>", "application/xml", "<a/>", "application/xml"),
        ('{"raw": 1}', "application/json", {"raw": 1}, "application/json"),
        (b"\x89PNG", "image/png", b"\x89PNG", "image/png"),
    ],
)
def test_record_round_trip(
    store: StoreClient, value: object, content_type: str | None, expected: object, stored_type: str
) -> None:
    store.set_record("rec", value, content_type)
    record = store.get_record("rec")
    assert record is not None
    assert record.value == expected
    assert record.content_type == stored_type
    raw = store.get_record_as_bytes("rec")
    assert raw is not None and isinstance(raw.value, bytes)


def test_missing_record(store: StoreClient) -> None:
    assert store.get_record("nope") is None
    assert store.get_record_as_bytes("nope") is None
    assert store.record_exists("nope") is False
    with store.stream_record("nope") as rec:
        assert rec is None


def test_record_exists_and_delete(store: StoreClient) -> None:
    store.set_record("k", "v")
    assert store.record_exists("k")
    store.delete_record("k")
    assert not store.record_exists("k")
    store.delete_record("k")  # deleting a missing record is not an error


def test_keys_listing_and_iteration(store: StoreClient) -> None:
    keys = [f"key-{i:02d}" for i in range(7)]
    for key in reversed(keys):
        store.set_record(key, {"i": key})
    page = store.list_keys(limit=3)
    assert [i.key for i in page.items] == keys[:3]
    assert page.is_truncated and page.next_exclusive_start_key == keys[2]
    assert all(i.size > 0 and i.record_public_url for i in page.items)
    after = store.list_keys(exclusive_start_key=keys[2], limit=2)
    assert [i.key for i in after.items] == keys[3:5]
    assert [i.key for i in store.iterate_keys(chunk_size=2)] == keys
    assert [i.key for i in store.iterate_keys(limit=4, chunk_size=3)] == keys[:4]
    assert [i.key for i in store.iterate_keys(exclusive_start_key=keys[4])] == keys[5:]
    assert [i.key for i in store.iterate_keys(prefix="key-0")] == keys


def test_invalid_key_is_a_typed_error(store: StoreClient) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        store.set_record("a b", 1)
    err = caught.value
    assert err.status == 400 and err.type == "invalid-record-key" and "invalid" in err.message
    assert err.method == "PUT" and "/records/a%20b" in err.url


def test_missing_store_is_not_found(client: KvboxClient) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.key_value_store("no-such-store-ever").set_record("k", 1)
    assert caught.value.status == 404 and caught.value.type == "record-not-found"


def test_bad_token_is_unauthorized(server: ServerProcess) -> None:
    bad = KvboxClient("not-a-real-token-000", api_url=server.url)
    with bad, pytest.raises(UnauthorizedError) as caught:
        bad.key_value_stores().list()
    assert caught.value.status == 401 and caught.value.type == "invalid-token"
    assert isinstance(caught.value, ApiError)


def test_record_public_url_is_signed_and_opens_without_a_token(store: StoreClient) -> None:
    store.set_record("pub", {"x": 1})
    info = store.get()
    assert info is not None and info.url_signing_secret_key
    url = store.get_record_public_url("pub")
    assert url.endswith("/records/pub?signature=" + sign_record(info.url_signing_secret_key, "pub"))
    assert httpx.get(url).json() == {"x": 1}


def test_keys_public_url_opens_without_a_token(store: StoreClient) -> None:
    store.set_record("a", 1)
    store.set_record("b", 2)
    url = store.create_keys_public_url(limit=1, expires_in=timedelta(minutes=5))
    body = httpx.get(url).json()["data"]
    assert [i["key"] for i in body["items"]] == ["a"]
    forever = httpx.get(store.create_keys_public_url()).json()["data"]
    assert [i["key"] for i in forever["items"]] == ["a", "b"]


def test_zip_download_to_path_and_file(store: StoreClient, tmp_path: Path) -> None:
    store.set_record("one", {"n": 1})
    store.set_record("two", "second")
    size = store.download_zip(tmp_path / "all.zip")
    assert size == (tmp_path / "all.zip").stat().st_size
    with zipfile.ZipFile(tmp_path / "all.zip") as zf:
        assert sorted(zf.namelist()) == ["one", "two"]
        assert zf.read("two") == b"second"
    buffer = io.BytesIO()
    store.download_zip(buffer, prefix="on")
    with zipfile.ZipFile(buffer) as zf:
        assert zf.namelist() == ["one"]


def test_set_record_from_path_and_file(store: StoreClient, tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"line\n" * 1000)
    store.set_record("from-path", path, "text/plain")
    record = store.get_record("from-path")
    assert record is not None and record.value == "line\n" * 1000
    store.set_record("from-file", io.BytesIO(b"abc"))
    raw = store.get_record_as_bytes("from-file")
    assert raw is not None and raw.value == b"abc" and raw.content_type == "application/octet-stream"


def test_content_encoding_given_by_the_caller(store: StoreClient) -> None:
    import gzip

    store.set_record("pre", gzip.compress(b"already compressed"), "text/plain", content_encoding="gzip")
    record = store.get_record("pre")
    assert record is not None and record.value == "already compressed"
    with pytest.raises(ValueError):
        store.set_record("pre", "text is not encoded bytes", content_encoding="gzip")


def test_api_url_with_v2_suffix_works(server: ServerProcess, token: str) -> None:
    with KvboxClient(token, api_url=server.url + "/v2/") as c:
        assert c.api_url == server.url
        c.key_value_stores().list(limit=1)
