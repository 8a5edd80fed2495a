"""Local mode on disk: the `{KEY}.{EXT}` layout, sidecars, and folders written by other tools."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvbox.core.errors import InvalidRecordKeyError, RecordNotFoundError, StorageError
from kvbox.core.keys import KEY_RE
from kvbox.sdk import Configuration, KeyValueStore, KeyValueStoreSync
from kvbox.sdk.local import layout
from kvbox.sdk.local.folders import open_folder

pytestmark = pytest.mark.anyio


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def local(storage: Path) -> Configuration:
    return Configuration(storage_dir=str(storage))


def folder(storage: Path, name: str = "default") -> Path:
    return storage / "key_value_stores" / name


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def test_files_and_sidecars(storage: Path, local: Configuration) -> None:
    kvs = await KeyValueStore.open(configuration=local)
    await kvs.set_value("OUTPUT", {"a": 1})
    await kvs.set_value("note", "text")
    await kvs.set_value("blob", b"\x00")
    await kvs.set_value("page", "<p/>", "text/html; charset=utf-8")
    await kvs.set_value("page2", "<p/>", "text/html")
    await kvs.set_value("shot.png", b"\x89PNG", "image/png")
    await kvs.set_value("ld", {"@id": 1}, "application/ld+json")
    await KeyValueStore.close_all()
    path = folder(storage)
    assert listing(path) == [
        "OUTPUT.json",
        "__metadata__.json",
        "blob.bin",
        "ld.json",
        "ld.json.__metadata__.json",
        "note.txt",
        "page.html",
        "page2.html",
        "page2.html.__metadata__.json",
        "shot.png.png",
    ]
    assert json.loads((path / "OUTPUT.json").read_bytes()) == {"a": 1}
    assert (path / "note.txt").read_text() == "text"
    side = json.loads((path / "page2.html.__metadata__.json").read_text())
    assert side == {"key": "page2", "content_type": "text/html", "size": 4}
    meta = json.loads((path / "__metadata__.json").read_text())
    assert set(meta) == {"id", "name", "created_at", "accessed_at", "modified_at"} and meta["name"] is None


async def test_changing_type_moves_the_file(storage: Path, local: Configuration) -> None:
    kvs = await KeyValueStore.open(name="moves", configuration=local)
    await kvs.set_value("k", "<p/>", "text/html")
    await kvs.set_value("k", {"now": "json"})
    assert listing(folder(storage, "moves")) == ["__metadata__.json", "k.json"]
    await kvs.set_value("k", b"raw")
    assert listing(folder(storage, "moves")) == ["__metadata__.json", "k.bin"]
    await kvs.delete_value("k")
    assert listing(folder(storage, "moves")) == ["__metadata__.json"]
    await KeyValueStore.close_all()


async def test_input_files(storage: Path) -> None:
    path = folder(storage)
    path.mkdir(parents=True)
    (path / "INPUT.json").write_text('{"start": 1}')
    local = Configuration(storage_dir=str(storage))
    kvs = await KeyValueStore.open(configuration=local)
    assert await kvs.get_value("INPUT") == {"start": 1}
    await kvs.set_value("INPUT", {"start": 2})
    assert json.loads((path / "INPUT.json").read_text()) == {"start": 2}
    (path / "INPUT.json").unlink()
    (path / "INPUT").write_text('{"bare": true}')
    assert await kvs.get_value("INPUT") == {"bare": True}
    (path / "INPUT").write_bytes(b"\x00not json")
    assert await kvs.get_value("INPUT") == b"\x00not json"
    (path / "INPUT").unlink()
    (path / "INPUT.txt").write_text("plain input")
    assert await kvs.get_value("INPUT") == "plain input"
    assert [i.key for i in await kvs.list_keys()] == ["INPUT"]
    await KeyValueStore.close_all()


def write_crawlee_record(path: Path, key: str, body: bytes, content_type: str) -> None:
    """A record as crawlee-python 1.x writes it: percent-encoded name, sidecar required."""
    from urllib.parse import quote

    name = quote(key, safe="")
    (path / name).write_bytes(body)
    sidecar = {"key": key, "content_type": content_type, "size": len(body)}
    (path / f"{name}.__metadata__.json").write_text(json.dumps(sidecar, indent=2))


async def test_crawlee_python_1_folder_opens(storage: Path, local: Configuration) -> None:
    path = folder(storage, "crawled")
    path.mkdir(parents=True)
    meta = {
        "id": "cpAjRn3YNGZxlNoOB",
        "name": "crawled",
        "accessed_at": "2026-11-26 13:12:29.064356+00:00",
        "created_at": "2026-11-26 13:12:29.064356+00:00",
        "modified_at": "2026-11-26 13:12:29.064356+00:00",
    }
    (path / "__metadata__.json").write_text(json.dumps(meta, indent=2))
    write_crawlee_record(path, "OUTPUT", b'{\n  "items": 3\n}', "application/json; charset=utf-8")
    write_crawlee_record(path, "a/b c?#%", b"odd key", "text/plain; charset=utf-8")
    write_crawlee_record(path, "shot.png", b"\x89PNG", "image/png")
    write_crawlee_record(path, "nothing", b"", "application/x-none")
    (path / "OUTPUT.X1b2c3.tmp").write_bytes(b"half")  # a crawlee temp file is nobody's record
    kvs = await KeyValueStore.open(id="cpAjRn3YNGZxlNoOB", configuration=local)
    assert kvs.name == "crawled"
    assert [i.key for i in await kvs.list_keys()] == ["OUTPUT", "a/b c?#%", "nothing", "shot.png"]
    assert await kvs.get_value("OUTPUT") == {"items": 3}
    assert await kvs.get_value("a/b c?#%") == "odd key"
    assert await kvs.get_value("shot.png") == b"\x89PNG"
    assert await kvs.record_exists("nothing") and await kvs.get_value("nothing", "default") is None
    meta_before = await kvs.get_metadata()
    assert meta_before.created_at is not None and meta_before.created_at.year == 2026
    # Rewriting a record moves it to the kvbox layout; keys the platform refuses stay read-only.
    await kvs.set_value("OUTPUT", {"items": 4})
    assert "OUTPUT" not in listing(path) and "OUTPUT.json" in listing(path)
    assert await kvs.get_value("OUTPUT") == {"items": 4}
    with pytest.raises(InvalidRecordKeyError):
        await kvs.set_value("a/b c?#%", "x")
    await kvs.delete_value("a/b c?#%")
    assert not any(name.startswith("a%2F") for name in listing(path))
    await KeyValueStore.close_all()


async def test_crawlee_js_folder_opens(storage: Path, local: Configuration) -> None:
    path = folder(storage)
    path.mkdir(parents=True)
    (path / "INPUT.json").write_text('{"url": "https://example.com"}')
    (path / "photo.jpeg").write_bytes(b"\xff\xd8")
    (path / "readme.txt").write_text("hello")
    (path / "page.html").write_text("<p>hi</p>")
    (path / "data.v2").write_bytes(b"?")
    kvs = await KeyValueStore.open(configuration=local)
    assert [i.key for i in await kvs.list_keys()] == ["INPUT", "data.v2", "page", "photo", "readme"]
    assert {i.key: i.content_type for i in await kvs.list_keys()}["photo"] == "image/jpeg"
    assert await kvs.get_value("photo") == b"\xff\xd8"
    assert await kvs.get_value("page") == "<p>hi</p>"
    assert await kvs.get_value("data.v2") == b"?"
    assert (path / "__metadata__.json").exists()
    await KeyValueStore.close_all()


async def test_real_crawlee_folder_opens(storage: Path, local: Configuration) -> None:
    """A folder written by crawlee itself (crawlee is a test dependency)."""
    from crawlee.configuration import Configuration as CrawleeConfiguration
    from crawlee.storage_clients import FileSystemStorageClient
    from crawlee.storages import KeyValueStore as CrawleeKeyValueStore

    crawlee_config = CrawleeConfiguration(storage_dir=str(storage), purge_on_start=False)
    theirs = await CrawleeKeyValueStore.open(
        name="shared", configuration=crawlee_config, storage_client=FileSystemStorageClient()
    )
    await theirs.set_value("json", {"a": [1, 2]})
    await theirs.set_value("text", "hello")
    await theirs.set_value("bytes", b"\x01\x02")
    await theirs.set_value("odd key/1", "slash")
    ours = await KeyValueStore.open(name="shared", configuration=local)
    assert ours.id == theirs.id
    assert [i.key for i in await ours.list_keys()] == ["bytes", "json", "odd key/1", "text"]
    assert await ours.get_value("json") == {"a": [1, 2]}
    assert await ours.get_value("text") == "hello"
    assert await ours.get_value("bytes") == b"\x01\x02"
    assert await ours.get_value("odd key/1") == "slash"
    await KeyValueStore.close_all()


async def test_store_metadata_and_open_by_id(storage: Path, local: Configuration) -> None:
    kvs = await KeyValueStore.open(name="meta", configuration=local)
    before = await kvs.get_metadata()
    await kvs.set_value("k", 1)
    await KeyValueStore.close_all()
    saved = json.loads((folder(storage, "meta") / "__metadata__.json").read_text())
    assert saved["id"] == kvs.id and saved["name"] == "meta"
    again = await KeyValueStore.open(id=kvs.id, configuration=local)
    after = await again.get_metadata()
    assert after.created_at == before.created_at and before.created_at is not None
    assert after.modified_at and after.modified_at >= before.created_at
    await KeyValueStore.close_all()


async def test_public_url_of_a_missing_record_is_an_error(local: Configuration) -> None:
    kvs = await KeyValueStore.open(configuration=local)
    with pytest.raises(RecordNotFoundError):
        await kvs.get_public_url("missing")
    await KeyValueStore.close_all()


async def test_corrupt_sidecar_is_a_storage_error(storage: Path, local: Configuration) -> None:
    kvs = await KeyValueStore.open(configuration=local)
    await kvs.set_value("k", "<p/>", "text/html")
    (folder(storage) / "k.html.__metadata__.json").write_text("{not json")
    with pytest.raises(StorageError):
        await kvs.get_value("k")
    await KeyValueStore.close_all()


async def test_reserved_names_and_long_keys(storage: Path, local: Configuration) -> None:
    kvs = await KeyValueStore.open(configuration=local)
    with pytest.raises(InvalidRecordKeyError):
        await kvs.set_value("__metadata__", {"x": 1})
    long_key = "k" * 256
    await kvs.set_value(long_key, {"long": True})
    await kvs.set_value(long_key, "now text")
    assert await kvs.get_value(long_key) == "now text"
    assert [i.key for i in await kvs.list_keys()] == [long_key]
    assert all(len(name) <= 255 for name in listing(folder(storage)))
    await KeyValueStore.close_all()
    again = await KeyValueStore.open(configuration=local)
    assert await again.get_value(long_key) == "now text"
    await again.delete_value(long_key)
    assert listing(folder(storage)) == ["__metadata__.json"]
    await KeyValueStore.close_all()


def test_another_process_sees_new_keys(storage: Path, local: Configuration) -> None:
    """Two handles on one folder (as two processes would have): writes of one are read by the other."""
    mine = open_folder(str(storage), name="shared")
    theirs = open_folder(str(storage), name="shared")
    assert list(mine.keys()) == []
    theirs.write("k", b'{"v": 1}', "application/json; charset=utf-8")
    assert mine.read("k") == (b'{"v": 1}', "application/json; charset=utf-8")
    theirs.write("k", b"text", "text/plain; charset=utf-8")
    assert mine.read("k") == (b"text", "text/plain; charset=utf-8")
    theirs.delete("k")
    assert mine.read("k") is None and not mine.exists("k")


def test_no_temp_files_are_left(storage: Path, local: Configuration) -> None:
    kvs = KeyValueStoreSync.open(configuration=local)
    for i in range(50):
        kvs.set_value(f"k{i}", {"i": i})
        kvs.set_value(f"h{i}", "<p/>", "text/html")
    KeyValueStoreSync.close_all()
    assert not [n for n in os.listdir(folder(storage)) if n.endswith(".tmp")]


@given(st.from_regex(KEY_RE, fullmatch=True), st.sampled_from(sorted(set(layout.EXTENSION_TYPES.values()))))
def test_every_valid_key_maps_to_a_file_and_back(key: str, content_type: str) -> None:
    name, needs_sidecar = layout.value_filename(key, content_type)
    assert len(name.encode()) + len(layout.SIDECAR_SUFFIX) <= 255
    assert not layout.is_reserved(name) or key.endswith("__metadata__")
    if not needs_sidecar:
        assert layout.classify(name) == layout.Entry(name, key, content_type, True)
    assert name in layout.candidate_filenames(key)


def test_durable_writes(storage: Path) -> None:
    kvs = KeyValueStoreSync.open(configuration=Configuration(storage_dir=str(storage), durable=True))
    kvs.set_value("k", {"fsynced": True})
    kvs.set_value("h", "<p/>", "text/html")
    assert kvs.get_value("k") == {"fsynced": True} and kvs.get_value("h") == "<p/>"
    KeyValueStoreSync.close_all()
