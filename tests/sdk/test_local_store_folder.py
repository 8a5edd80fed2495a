"""One store folder opened by its path: read-only listing, exact record files, streamed writes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvbox.core.content import BINARY_TYPE, JSON_TYPE, TEXT_TYPE
from kvbox.core.errors import InvalidRecordKeyError
from kvbox.sdk.local import METADATA_FILE, LocalStore, RecordFile, open_folder, open_store_folder

ODD_TYPE = "application/vnd.kvbox-test; version=2"  # no extension stands for it: needs a sidecar


def snapshot(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under `path` with its size and modification time."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """A store folder with kvbox files, a crawlee-python 1.x record, a sidecar type and bare input files."""
    store = open_folder(str(tmp_path / "storage"), name="mixed")
    store.write("OUTPUT", b'{"ok": true}', JSON_TYPE)
    store.write("odd", b"\x00odd", ODD_TYPE)
    store.write("notes", "ünï".encode(), TEXT_TYPE)
    store.flush()
    path = Path(store.directory)
    (path / "crawled").write_bytes(b"from crawlee")
    (path / "crawled.__metadata__.json").write_text(json.dumps({"key": "crawled", "content_type": "text/csv"}))
    (path / "INPUT").write_text('{"query": "kvbox"}')  # a bare input file: JSON
    return path


def test_record_files_carry_exact_types_sizes_and_paths(mixed: Path) -> None:
    store = open_store_folder(str(mixed), read_only=True)
    found = {f.key: f for f in store.record_files()}
    assert list(found) == ["INPUT", "OUTPUT", "crawled", "notes", "odd"]  # key order
    assert found["INPUT"] == RecordFile("INPUT", JSON_TYPE, 18, f"{mixed}/INPUT")
    assert found["odd"].content_type == ODD_TYPE and Path(found["odd"].path).read_bytes() == b"\x00odd"
    assert found["crawled"].content_type == "text/csv"
    assert found["notes"].size == len("ünï".encode())
    assert store.meta.name == "mixed"

    (mixed / "INPUT").write_bytes(b"\x00not json")
    [bare] = [f for f in store.record_files() if f.key == "INPUT"]
    assert bare.content_type == BINARY_TYPE


def test_a_read_only_store_never_writes(mixed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("kvbox.sdk.local.store.METADATA_PERSIST_INTERVAL", 0.0)  # timestamps due on every call
    before = snapshot(mixed)
    store = open_store_folder(str(mixed), read_only=True, input_keys=frozenset({"INPUT"}))
    assert [f.key for f in store.record_files()] == ["INPUT", "OUTPUT", "crawled", "notes", "odd"]
    assert store.read("OUTPUT") == (b'{"ok": true}', JSON_TYPE)
    for write in (
        lambda: store.write("k", b"x", TEXT_TYPE),
        lambda: store.write_stream("k", TEXT_TYPE, [b"x"]),
        lambda: store.delete("OUTPUT"),
        store.flush,
        store.drop,
    ):
        with pytest.raises(PermissionError):
            write()
    assert snapshot(mixed) == before


def test_a_read_only_folder_without_metadata_stays_without(tmp_path: Path) -> None:
    folder = tmp_path / "handmade"
    folder.mkdir()
    (folder / "INPUT.json").write_text("{}")
    store = open_store_folder(str(folder), read_only=True)
    assert store.meta.id == "" and store.meta.name is None
    assert [f.key for f in store.record_files()] == ["INPUT"]
    assert listing(folder) == ["INPUT.json"]


def test_a_writable_store_folder_gets_metadata_once(tmp_path: Path) -> None:
    named = open_store_folder(str(tmp_path / "out"), id="abc123", name="run-42")
    assert (named.meta.id, named.meta.name) == ("abc123", "run-42")
    meta = json.loads((tmp_path / "out" / METADATA_FILE).read_text())
    assert (meta["id"], meta["name"]) == ("abc123", "run-42")
    again = open_store_folder(str(tmp_path / "out"), id="other", name="other")
    assert (again.meta.id, again.meta.name) == ("abc123", "run-42")  # the folder keeps its identity
    assert open_store_folder(str(tmp_path / "unnamed"), id="x1").meta.name == "unnamed"
    assert open_store_folder(str(tmp_path / "default"), id="x2", name="run-42").meta.name is None


def test_write_stream_writes_the_chunks_and_returns_the_size(tmp_path: Path) -> None:
    store = open_store_folder(str(tmp_path / "s"))
    size = store.write_stream("big", BINARY_TYPE, (bytes([i]) * 65536 for i in range(20)))
    assert size == 20 * 65536
    assert store.read("big") == (b"".join(bytes([i]) * 65536 for i in range(20)), BINARY_TYPE)
    assert store.write_stream("odd", ODD_TYPE, [b"a", b"", b"bc"]) == 3
    side = json.loads((tmp_path / "s" / "odd.bin.__metadata__.json").read_text())
    assert side == {"key": "odd", "content_type": ODD_TYPE, "size": 3}
    store.write_stream("odd", JSON_TYPE, [b"[1]"])  # another type: the old file and sidecar go
    assert listing(tmp_path / "s") == [METADATA_FILE, "big.bin", "odd.json"]
    with pytest.raises(InvalidRecordKeyError):
        store.write_stream("__metadata__", JSON_TYPE, [b"{}"])  # the store metadata file


def test_a_failed_stream_leaves_the_old_value(tmp_path: Path) -> None:
    store = open_store_folder(str(tmp_path / "s"))
    store.write("k", b"old", TEXT_TYPE)

    def failing() -> Iterator[bytes]:
        yield b"half of the new value"
        raise OSError("the source went away")

    with pytest.raises(OSError, match="went away"):
        store.write_stream("k", BINARY_TYPE, failing())
    assert store.read("k") == (b"old", TEXT_TYPE)
    assert listing(tmp_path / "s") == [METADATA_FILE, "k.txt"]  # no temp file, no half-written file


def test_open_writer_replaces_the_record_only_at_the_end(tmp_path: Path) -> None:
    store = open_store_folder(str(tmp_path / "s"))
    reader = open_store_folder(str(tmp_path / "s"))  # another handle, as another process has
    store.write("k", b"old", TEXT_TYPE)
    with store.open_writer("k", TEXT_TYPE) as out:
        out.write(b"new ")
        assert reader.read("k") == (b"old", TEXT_TYPE)
        out.write(b"value")
    assert out.size == 9
    assert reader.read("k") == (b"new value", TEXT_TYPE)


def test_a_concurrent_writer_of_another_type_keeps_its_value(tmp_path: Path) -> None:
    """While one handle streams a key as text over its JSON file, another replaces that JSON
    file: the newer JSON file must survive (the streaming writer removes only the file it knew)."""
    folder = tmp_path / "s"
    mine = open_store_folder(str(folder))
    mine.write("k", b'{"v": 1}', JSON_TYPE)
    theirs = open_store_folder(str(folder))

    def chunks() -> Iterator[bytes]:
        yield b"text, "
        theirs.write("k", b'{"v": 2}', JSON_TYPE)  # lands while the stream is being written
        yield b"streamed"

    assert mine.write_stream("k", TEXT_TYPE, chunks()) == len(b"text, streamed")
    assert (folder / "k.json").read_bytes() == b'{"v": 2}'
    assert (folder / "k.txt").read_bytes() == b"text, streamed"
    assert mine.read("k") == (b"text, streamed", TEXT_TYPE)


def test_without_a_concurrent_writer_the_old_type_goes(tmp_path: Path) -> None:
    folder = tmp_path / "s"
    mine = open_store_folder(str(folder))
    mine.write("k", b'{"v": 1}', JSON_TYPE)
    assert mine.write_stream("k", TEXT_TYPE, [b"text"]) == 4
    assert listing(folder) == [METADATA_FILE, "k.txt"]
    assert isinstance(mine, LocalStore) and not mine.read_only
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]
