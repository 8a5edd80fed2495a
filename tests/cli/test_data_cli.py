"""The data commands (`kvbox stores|keys|get|put|rm|push|pull`) in both modes.

Every behaviour test runs twice: against the real server process (remote mode, a user made
with `kvbox users create` on the server's data directory) and on a temp data directory
(local mode, in this process). Most runs go through click's CliRunner, which runs the same
code as the installed command without a process start; a few tests start real processes to
check what only a process shows (stdin and stdout as bytes, exit statuses, stderr).
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from click.testing import CliRunner, Result

from kvbox.cli import remote
from kvbox.cli.main import cli
from kvbox.cli.records import guess_content_type
from kvbox.cli.transfer import CountingReader, run_jobs
from kvbox.core.content import BINARY_TYPE, JSON_TYPE, TEXT_TYPE
from kvbox.sdk.local import LocalStore, open_folder
from kvbox.sdk.models import StoreMetadata
from kvbox.service.container import Services, build_services
from kvbox.service.principal import Principal
from kvbox.service.settings import Settings

T = TypeVar("T")

KVBOX = Path(sys.executable).with_name("kvbox")
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
ODD_TYPE = "application/vnd.kvbox-test; version=2"  # no extension stands for it: needs a sidecar
BIG = os.urandom(1536 * 1024)  # > 1 MiB, incompressible
BIG_JSON = json.dumps([{"i": i, "text": "row " * 8} for i in range(30_000)]).encode()  # > 1 MiB, compressible


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def with_services(data_dir: Path, action: Callable[[Services], Awaitable[T]]) -> T:
    async def go() -> T:
        services = build_services(Settings(data_dir=data_dir))
        try:
            return await action(services)
        finally:
            await services.close()

    return asyncio.run(go())


def create_user_cli(data_dir: Path, prefix: str) -> tuple[str, str]:
    """A user made with `kvbox users create` (a real process); returns its name and token."""
    username = unique(prefix)
    done = subprocess.run(
        [*_command(), "users", "create", username, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=_clean_env(),
    )
    return username, done.stdout.strip().splitlines()[-1]


def _command() -> list[str]:
    return [str(KVBOX)] if KVBOX.exists() else [sys.executable, "-m", "kvbox.cli"]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("KVBOX_")}


@dataclass
class Kv:
    """Runs `kvbox` as one user of one target: in-process (call) or as a real process (`process`)."""

    mode: str
    username: str
    env: dict[str, str]
    others: dict[str, dict[str, str]] = field(default_factory=dict)
    data_dir: Path | None = None

    def __call__(self, *args: str, input: bytes | str | None = None, code: int = 0) -> Result:
        result = CliRunner().invoke(cli, list(args), input=input, env={"COLUMNS": "200", **self.env})
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == code, (
            f"kvbox {' '.join(args)} -> {result.exit_code}\n{result.stdout}\n{result.stderr}"
        )
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def fails(self, *args: str, message: str, code: int = 1, input: str | None = None) -> Result:
        result = self(*args, code=code, input=input)
        assert message in result.stderr, result.stderr
        assert result.stdout == ""
        return result

    def as_user(self, name: str) -> Kv:
        return Kv(self.mode, name, self.others[name], data_dir=self.data_dir)

    def process(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = {**_clean_env(), "COLUMNS": "200", **self.env}
        return subprocess.run([*_command(), *args], input=input, capture_output=True, timeout=60, env=env)


@pytest.fixture(autouse=True)
def _no_ambient_target(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KVBOX_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def remote_users(server: Any) -> dict[str, tuple[str, str]]:
    """Two users on the shared server, made with the CLI on its data directory."""
    return {role: create_user_cli(server.data_dir, f"data-{role}") for role in ("owner", "other")}


def _remote_kv(server: Any, users: dict[str, tuple[str, str]]) -> Kv:
    envs = {name: {"KVBOX_API_URL": server.url, "KVBOX_TOKEN": token} for name, token in users.values()}
    owner = users["owner"][0]
    return Kv("remote", owner, envs[owner], others=envs, data_dir=server.data_dir)


def _local_kv(data_dir: Path) -> Kv:
    async def make(s: Services) -> None:
        for name in ("alice", "bob"):
            await s.users.create_user(name)

    with_services(data_dir, make)
    envs = {name: {"KVBOX_DATA_DIR": str(data_dir), "KVBOX_USER": name} for name in ("alice", "bob")}
    return Kv("local", "alice", envs["alice"], others=envs, data_dir=data_dir)


@pytest.fixture(params=["remote", "local"])
def kv(request: pytest.FixtureRequest, tmp_path: Path) -> Kv:
    if request.param == "remote":
        server = request.getfixturevalue("server")
        return _remote_kv(server, request.getfixturevalue("remote_users"))
    return _local_kv(tmp_path / "data")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "data.json").write_bytes(b'{"a": [1, 2, 3]}')
    (folder / "notes.txt").write_bytes("héllo\n".encode())
    (folder / "logo.png").write_bytes(PNG)
    (folder / "big.bin").write_bytes(BIG)
    return folder


# --- stores ---------------------------------------------------------------------------------


def test_stores_create_list_info_rename_rm(kv: Kv) -> None:
    name = unique("st")
    created = kv.json("stores", "create", name)
    assert created["created"] is True and created["name"] == name and created["username"] == kv.username
    store_id = created["id"]
    again = kv("stores", "create", name)
    assert again.stdout.strip() == store_id and "Already exists" in again.stderr
    unnamed_id = kv("stores", "create").stdout.strip()

    listed = {s["id"]: s for s in kv.json("stores", "ls")}
    assert store_id in listed and unnamed_id not in listed
    assert listed[store_id]["recordCount"] == 0 and listed[store_id]["expiresAt"] is None
    assert unnamed_id in {s["id"] for s in kv.json("stores", "ls", "--unnamed")}
    table = kv("stores", "ls").stdout
    assert name in table and store_id in table and kv.username in table

    # A store is named by its name, its ID or owner~name.
    for ref in (name, store_id, f"{kv.username}~{name}"):
        assert kv.json("stores", "info", ref)["id"] == store_id
    info = kv("stores", "info", name).stdout
    assert store_id in info and "never" in info  # named stores do not expire
    assert kv.json("stores", "info", unnamed_id)["expiresAt"] is not None

    new_name = unique("renamed")
    assert kv.json("stores", "rename", name, new_name)["name"] == new_name
    assert kv.json("stores", "info", new_name)["id"] == store_id
    kv.fails("stores", "info", name, message=f'"{name}" was not found (record-not-found)')
    kv.fails("stores", "rename", new_name, "bad_name!", message="(invalid-value)")

    removed = kv("stores", "rm", new_name, "--yes")
    assert "Deleted store" in removed.stderr and removed.stdout == ""
    kv.fails("stores", "info", store_id, message="was not found")
    kv("stores", "rm", unnamed_id)  # stdin is not a terminal: no question asked
    kv.fails("stores", "rm", unnamed_id, message="was not found")


# --- records --------------------------------------------------------------------------------


def test_put_keys_get_rm(kv: Kv, files: Path, tmp_path: Path) -> None:
    store = unique("rec")
    kv("stores", "create", store)
    kv("put", store, "data", str(files / "data.json"))
    kv("put", store, "notes", str(files / "notes.txt"))
    put = kv.json("put", store, "logo", str(files / "logo.png"))
    assert put == {"store": put["store"], "key": "logo", "contentType": "image/png", "size": len(PNG),
                   "etag": put["etag"]}  # fmt: skip
    assert put["etag"].startswith('"') and put["etag"].endswith('"')
    kv("put", store, "big", str(files / "big.bin"), "--content-type", "application/x-big")
    kv("put", store, "piped", "-", input=b"from stdin \x00\xff")
    kv("put", store, "typed", "-", "-t", "text/csv", input="a,b\n1,2\n")

    listing = kv.json("keys", store)
    assert [k["key"] for k in listing] == ["big", "data", "logo", "notes", "piped", "typed"]
    assert {k["key"]: k["size"] for k in listing}["logo"] == len(PNG)
    assert [k["key"] for k in kv.json("keys", store, "--prefix", "p")] == ["piped"]
    assert [k["key"] for k in kv.json("keys", store, "--limit", "2")] == ["big", "data"]
    table = kv("keys", store).stdout
    assert "notes" in table and "1.5 MiB" in table

    expected = {
        "data": (b'{"a": [1, 2, 3]}', JSON_TYPE),
        "notes": ("héllo\n".encode(), TEXT_TYPE),
        "logo": (PNG, "image/png"),
        "big": (BIG, "application/x-big"),
        "piped": (b"from stdin \x00\xff", BINARY_TYPE),
        "typed": (b"a,b\n1,2\n", "text/csv"),
    }
    for key, (body, ctype) in expected.items():
        assert kv("get", store, key).stdout_bytes == body
        assert kv.json("get", store, key, "--metadata")["contentType"] == ctype
    meta = kv("get", store, "logo", "--metadata").stdout
    assert "Content-Type: image/png" in meta and f"Size: {len(PNG)}" in meta

    out = tmp_path / "big.out"
    written = kv.json("get", store, "big", "-o", str(out))
    assert out.read_bytes() == BIG and written["size"] == len(BIG) and written["file"] == str(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
    kv("put", store, "big", "-", input=b"replaced")  # a put replaces the whole record
    assert kv("get", store, "big").stdout_bytes == b"replaced"

    kv.fails("rm", store, "data", "nope", message='Record "nope" was not found')
    assert kv("get", store, "data").stdout_bytes == expected["data"][0]  # nothing deleted
    assert "Deleted 2 records" in kv("rm", store, "data", "notes").stderr
    kv("rm", store, "data", "--force")
    assert [k["key"] for k in kv.json("keys", store)] == ["big", "logo", "piped", "typed"]


def test_conditional_put(kv: Kv, files: Path) -> None:
    store = unique("cas")
    kv("stores", "create", store)
    first = kv.json("put", store, "lock", str(files / "notes.txt"), "--if-absent")
    kv.fails("put", store, "lock", str(files / "data.json"), "--if-absent", message="(precondition-failed)")
    meta = kv.json("get", store, "lock", "--metadata")
    assert meta["etag"] == first["etag"]
    second = kv.json("put", store, "lock", str(files / "data.json"), "--if-match", meta["etag"])
    assert second["etag"] != first["etag"]
    kv.fails(
        "put", store, "lock", str(files / "notes.txt"), "--if-match", first["etag"], message="(precondition-failed)"
    )
    bare = second["etag"].strip('"')
    assert "ETag" in kv("put", store, "lock", str(files / "notes.txt"), "--if-match", bare).stderr
    kv.fails("put", store, "new", str(files / "notes.txt"), "--if-match", "*", message="(precondition-failed)")
    kv.fails("put", store, "x", str(files / "notes.txt"), "--if-match", "*", "--if-absent",
             message="exclude each other", code=2)  # fmt: skip
    assert kv("get", store, "lock").stdout_bytes == "héllo\n".encode()
    assert (
        "ETag: " + kv.json("get", store, "lock", "--metadata")["etag"] in kv("get", store, "lock", "--metadata").stdout
    )


def test_get_a_range(kv: Kv, files: Path, tmp_path: Path) -> None:
    store = unique("range")
    kv("stores", "create", store)
    kv("put", store, "big", str(files / "big.bin"))
    (files / "big.json").write_bytes(BIG_JSON)
    kv("put", store, "json", str(files / "big.json"))  # compressed on the way to a server
    for spec, part in (("0-9", BIG[:10]), ("1000-", BIG[1000:]), ("-5", BIG[-5:]), ("bytes=7-7", BIG[7:8]),
                       ("10-99999999", BIG[10:])):  # fmt: skip
        assert kv("get", store, "big", "--range", spec, "-o", "-").stdout_bytes == part, spec
    assert kv("get", store, "json", "--range", "100-199", "-o", "-").stdout_bytes == BIG_JSON[100:200]
    assert kv("get", store, "json", "--range", "-10", "-o", "-").stdout_bytes == BIG_JSON[-10:]
    out = tmp_path / "part.bin"
    written = kv.json("get", store, "big", "--range", "100-1123", "-o", str(out))
    assert out.read_bytes() == BIG[100:1124] and written["size"] == 1024
    kv.fails("get", store, "big", "--range", f"{len(BIG)}-", "-o", "-", message="(range-not-satisfiable)")
    for bad in ("5-1", "abc", "-0", "-"):
        kv.fails("get", store, "big", "--range", bad, message="--range", code=2)
    kv.fails("get", store, "big", "--range", "0-1", "--metadata", message="--range", code=2)
    if kv.mode == "local":  # a record stored compressed: the range is cut from its content
        assert kv.data_dir is not None

        async def packed(s: Services) -> None:
            who = Principal(user=await s.users.find_user(kv.username))

            async def body() -> AsyncIterator[bytes]:
                yield gzip.compress(BIG_JSON)

            await s.records.put(who, "~" + store, "packed", body=body(), content_type=JSON_TYPE,
                                content_encoding="gzip", content_length=None)  # fmt: skip

        with_services(kv.data_dir, packed)
        assert kv.json("get", store, "packed", "--metadata")["encoding"] == "gzip"
        assert kv("get", store, "packed", "--range", "5000-5099", "-o", "-").stdout_bytes == BIG_JSON[5000:5100]
        assert kv("get", store, "packed", "--range", "-7", "-o", "-").stdout_bytes == BIG_JSON[-7:]


def test_record_lifecycle_commands(kv: Kv, files: Path) -> None:
    store = unique("life")
    kv("stores", "create", store)
    for key in ("tmp-1", "tmp-2", "keep"):
        kv("put", store, key, str(files / "data.json"))
    listing = {k["key"]: k for k in kv.json("keys", store)}
    keep = listing["keep"]
    assert keep["contentType"] == JSON_TYPE and keep["expiresAt"] is None
    assert keep["etag"].startswith('"') and keep["modifiedAt"].endswith("Z")
    table = kv("keys", store).stdout
    assert "Content type" in table and "Expires" in table and "never" in table

    info = kv.json("stores", "set-expiry", store, "1d")
    assert info["recordExpiry"] == [{"prefix": "", "expireAfterSecs": 86400}]
    info = kv.json("stores", "set-expiry", store, "--prefix", "tmp-", "90m")
    assert info["recordExpiry"] == [
        {"prefix": "", "expireAfterSecs": 86400},
        {"prefix": "tmp-", "expireAfterSecs": 5400},
    ]
    assert "every key: 1d; tmp-*: 90m" in kv("stores", "info", store).stdout
    listing = {k["key"]: k for k in kv.json("keys", store)}
    assert listing["tmp-1"]["expiresAt"] < listing["keep"]["expiresAt"]
    kv.fails("stores", "set-expiry", store, "--clear", "--prefix", "nope", message="no expiry rule for prefix 'nope'")
    kv.fails("stores", "set-expiry", store, "1.5s", message="whole number of seconds", code=2)
    kv.fails("stores", "set-expiry", store, message="Give a DURATION, or --clear", code=2)
    assert kv.json("stores", "set-expiry", store, "--clear", "--prefix", "tmp-")["recordExpiry"] == [
        {"prefix": "", "expireAfterSecs": 86400}
    ]
    assert kv.json("stores", "set-expiry", store, "--clear")["recordExpiry"] == []
    assert "Record expiry" in kv("stores", "info", store).stdout

    done = kv.json("rm", store, "--prefix", "tmp-")
    assert done["deletedCount"] == 2
    assert [k["key"] for k in kv.json("keys", store)] == ["keep"]
    assert "Deleted 1 record from" in kv("rm", store, "--prefix", "", "--yes").stderr
    assert kv.json("keys", store) == []
    kv.fails("rm", store, "a", "--prefix", "x", message="not both", code=2)
    kv.fails("rm", store, message="--prefix", code=2)


def test_errors_name_the_problem(kv: Kv, files: Path) -> None:
    store = unique("err")
    kv("stores", "create", store)
    missing = unique("missing")
    for args in (
        ("keys", missing),
        ("get", missing, "k"),
        ("put", missing, "k", str(files / "data.json")),
        ("rm", missing, "k"),
        ("stores", "info", missing),
        ("pull", missing, str(files / "out")),
    ):
        kv.fails(*args, message=f'Key-value store "{missing}" was not found (record-not-found)')
    kv.fails("get", store, "nope", message='Record "nope" was not found in store')
    kv.fails("get", store, "nope", "--metadata", message='Record "nope" was not found')
    for bad in ("bad key", "a/b", "x" * 300):
        kv.fails("put", store, bad, str(files / "data.json"), message="(invalid-record-key)")
        kv.fails("get", store, bad, message="(invalid-record-key)")
    kv.fails("put", store, "k", str(files / "nope.json"), code=2, message="does not exist")
    kv.fails("put", store, "k", str(files), code=2, message="is a directory")
    kv.fails("get", store, "k", "--json", code=2, message="--json goes with --metadata or -o FILE")
    kv.fails("put", store, "k", "-", "-t", "bad\ttype", input="x", message="(invalid-content-type-header)")
    kv.fails("stores", "create", "no_underscores", message="(invalid-value)")
    assert kv.json("keys", store) == []


def test_permissions_are_the_servers(kv: Kv, files: Path) -> None:
    """Another user is refused until the store is shared; READ lets them read, not write."""
    store = unique("perm")
    store_id = kv("stores", "create", store).stdout.strip()
    kv("put", store, "data", str(files / "data.json"))
    other_name = next(name for name in kv.others if name != kv.username)
    other = kv.as_user(other_name)
    shared = f"{kv.username}~{store}"
    other.fails("keys", store_id, message="(insufficient-permissions)")
    other.fails("keys", store, message=f'"{store}" was not found')  # their own namespace

    async def share(s: Services) -> None:
        owner = Principal(user=await s.users.find_user(kv.username))
        await s.sharing.grant(owner, store_id, other_name, "READ")

    assert kv.data_dir is not None
    with_services(kv.data_dir, share)
    assert [k["key"] for k in other.json("keys", shared)] == ["data"]
    assert other("get", store_id, "data").stdout_bytes == b'{"a": [1, 2, 3]}'
    other.fails("put", shared, "x", str(files / "data.json"), message="(insufficient-permissions)")
    other.fails("rm", shared, "data", message="(insufficient-permissions)")
    other.fails("stores", "rm", shared, message="(insufficient-permissions)")
    assert any(s["id"] == store_id for s in other.json("stores", "ls"))


# --- push and pull --------------------------------------------------------------------------

CRAWLEE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from crawlee.configuration import Configuration
    from crawlee.storage_clients import FileSystemStorageClient
    from crawlee.storages import KeyValueStore

    async def main(path, png, big, odd_type):
        cfg, client = Configuration(storage_dir=path), FileSystemStorageClient()
        kvs = await KeyValueStore.open(name="crawled", configuration=cfg, storage_client=client)
        await kvs.set_value("OUTPUT", {"items": 3, "name": "Zürich"})
        await kvs.set_value("notes", "plain text")
        await kvs.set_value("shot.png", open(png, "rb").read(), content_type="image/png")
        await kvs.set_value("odd", b"<odd/>", content_type=odd_type)
        await kvs.set_value("big", open(big, "rb").read())
        default = await KeyValueStore.open(configuration=cfg, storage_client=client)
        await default.set_value("INPUT", {"query": "kvbox"})

    asyncio.run(main(*sys.argv[1:]))
    """
)


@pytest.fixture(scope="module")
def storage_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A storage folder: `crawled` written by crawlee-python 1.x itself, `kv-layout` by kvbox's SDK,
    and a `default` store with INPUT."""
    root = tmp_path_factory.mktemp("template") / "storage"
    blobs = root.parent
    (blobs / "png").write_bytes(PNG)
    (blobs / "big").write_bytes(BIG)
    args = [str(root), str(blobs / "png"), str(blobs / "big"), ODD_TYPE]
    subprocess.run([sys.executable, "-c", CRAWLEE_SCRIPT, *args], check=True, timeout=120, capture_output=True)
    store = open_folder(str(root), name="kv-layout")
    store.write("OUTPUT", b'{"ok": true}', JSON_TYPE)
    store.write("readme", "ünïcode text".encode(), TEXT_TYPE)
    store.write("logo", PNG, "image/png")
    store.write("odd", b"\x00\x01odd bytes", ODD_TYPE)
    store.write("big-json", BIG_JSON, JSON_TYPE)
    store.write("x-none", b"", "application/x-none")
    store.flush()
    assert (root / "key_value_stores" / "crawled" / "OUTPUT.__metadata__.json").exists()  # crawlee's layout
    return root


def records_of(folder: Path) -> dict[str, tuple[bytes, str | None]]:
    """Key -> (bytes, content type), read by the SDK's local layout code."""
    meta = StoreMetadata(id="x", name=None, created_at=None, accessed_at=None, modified_at=None)
    store = LocalStore(str(folder), meta, durable=False, input_keys=frozenset({"INPUT"}))
    out: dict[str, tuple[bytes, str | None]] = {}
    for item in list(store.keys()):
        found = store.read(item.key)
        assert found is not None
        out[item.key] = found
    return out


def copy_storage(template: Path, dest: Path, names: dict[str, str]) -> Path:
    """The template with its store folders renamed (each test pushes stores of its own)."""
    for old, new in names.items():
        shutil.copytree(template / "key_value_stores" / old, dest / "key_value_stores" / new)
    return dest


def test_push_and_pull_round_trip_is_lossless(kv: Kv, storage_template: Path, tmp_path: Path) -> None:
    crawled, kvlayout, run = unique("crawled"), unique("kvl"), unique("run")
    root = copy_storage(
        storage_template, tmp_path / "storage", {"crawled": crawled, "kv-layout": kvlayout, "default": "default"}
    )
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    pushed = kv.json("push", str(root), "--store", run)
    assert {s["store"]["name"]: (s["records"], s["store"]["recordCount"]) for s in pushed["stores"]} == {
        crawled: (5, 5),
        kvlayout: (6, 6),
        run: (1, 1),
    }
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before  # the source is only read

    sources = {crawled: crawled, kvlayout: kvlayout, run: "default"}
    for store, folder in sources.items():
        original = records_of(root / "key_value_stores" / folder)
        out = tmp_path / "pulled" / store
        pulled = kv.json("pull", store, str(out))
        assert pulled["records"] == len(original) and pulled["folder"] == str(out)
        assert records_of(out) == original, store

    crawled_records = records_of(root / "key_value_stores" / crawled)
    assert crawled_records["odd"] == (b"<odd/>", ODD_TYPE)
    assert crawled_records["shot.png"] == (PNG, "image/png")
    assert crawled_records["big"] == (BIG, BINARY_TYPE)
    assert crawled_records["OUTPUT"][1] == JSON_TYPE
    pulled = tmp_path / "pulled" / kvlayout
    assert json.loads((pulled / "odd.bin.__metadata__.json").read_text())["content_type"] == ODD_TYPE
    assert (pulled / "big-json.json").read_bytes() == BIG_JSON
    assert not (pulled / "big-json.json.__metadata__.json").exists()  # the extension says it all
    assert (pulled / "logo.png").read_bytes() == PNG
    assert json.loads((pulled / "__metadata__.json").read_text())["name"] == kvlayout

    # Pushing again replaces records in place; pulling into a storage folder uses the store's name.
    again = kv.json("push", str(root / "key_value_stores" / kvlayout))
    assert again["stores"][0]["store"]["recordCount"] == 6
    target_root = tmp_path / "restored"
    (target_root / "key_value_stores").mkdir(parents=True)
    kv("pull", kvlayout, str(target_root))
    assert records_of(target_root / "key_value_stores" / kvlayout) == records_of(root / "key_value_stores" / kvlayout)


def test_pull_replaces_files_of_another_type(kv: Kv, tmp_path: Path) -> None:
    store = unique("swap")
    kv("stores", "create", store)
    kv("put", store, "rec", "-", "-t", "image/png", input=PNG)
    folder = tmp_path / "out"
    kv("pull", store, str(folder))
    kv("put", store, "rec", "-", "-t", ODD_TYPE, input=b"now odd")
    kv("pull", store, str(folder))
    assert records_of(folder) == {"rec": (b"now odd", ODD_TYPE)}
    assert sorted(p.name for p in folder.iterdir()) == ["__metadata__.json", "rec.bin", "rec.bin.__metadata__.json"]


def test_push_refuses_what_a_server_cannot_store(kv: Kv, tmp_path: Path) -> None:
    root = tmp_path / "storage"
    store = open_folder(str(root), name="my_alias")  # crawlee aliases may hold `_`; store names may not
    store.write("ok", b"1", TEXT_TYPE)
    fine = unique("fine")
    open_folder(str(root), name=fine).write("has space", b"x", TEXT_TYPE)  # crawlee accepts any key locally
    result = kv.fails("push", str(root), code=2, message="Nothing was pushed")
    assert "'my_alias' is not a valid store name" in result.stderr and "'has space'" in result.stderr
    assert fine not in {s["name"] for s in kv.json("stores", "ls")}  # checked before anything was sent
    name = unique("alias")
    pushed = kv.json("push", str(root / "key_value_stores" / "my_alias"), "--store", name)
    assert pushed["stores"][0]["store"]["name"] == name and pushed["stores"][0]["records"] == 1

    empty = tmp_path / "empty"
    empty.mkdir()
    kv.fails("push", str(empty), code=2, message="holds no records")
    kv.fails("push", str(root), "--store", "x", code=2, message="there is no such folder")
    kv.fails("push", str(tmp_path / "nope"), code=2, message="does not exist")


# --- choosing the target --------------------------------------------------------------------


def test_target_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = tmp_path / "data"
    local = Kv("local", "alice", {})
    local.fails("stores", "ls", "--data-dir", str(tmp_path / "nope"), code=2, message="No kvbox data directory")
    data_dir.mkdir()
    local.fails("stores", "ls", "--data-dir", str(data_dir), message="has no users yet")
    with_services(data_dir, lambda s: s.users.create_user("carol"))
    assert local.json("stores", "create", "c", "--data-dir", str(data_dir))["username"] == "carol"  # the only user
    with_services(data_dir, lambda s: s.users.create_user("dave"))
    local.fails("stores", "ls", "--data-dir", str(data_dir), code=2, message="several users (carol, dave)")
    local.fails("stores", "ls", "--data-dir", str(data_dir), "--user", "erin", code=2, message="No user 'erin'")
    assert local.json("stores", "ls", "--data-dir", str(data_dir), "--user", "dave") == []
    with_services(data_dir, lambda s: s.users.create_user("admin"))
    assert local.json("stores", "create", "a", "--data-dir", str(data_dir))["username"] == "admin"

    url = ("--api-url", "http://127.0.0.1:9")
    local.fails("stores", "ls", *url, "--data-dir", str(data_dir), code=2, message="exclude each other")
    local.fails("stores", "ls", "--data-dir", str(data_dir), "--token", "t" * 20, code=2, message="needs --api-url")
    local.fails("stores", "ls", *url, "--user", "carol", code=2, message="--user applies to a local")
    local.fails("stores", "ls", "--api-url", "ftp://x", code=2, message="not an http:// or https:// URL")
    # --data-dir on the command line wins over KVBOX_API_URL from the environment.
    env = Kv("local", "carol", {"KVBOX_API_URL": "http://127.0.0.1:9", "KVBOX_USER": "carol"})
    assert env.json("stores", "ls", "--data-dir", str(data_dir))[0]["name"] == "c"

    monkeypatch.setattr(remote, "RETRIES", 0)
    local.fails("keys", "s", *url, message="Could not reach the server at http://127.0.0.1:9")


def test_unknown_token_is_explained(server: Any) -> None:
    kv = Kv("remote", "nobody", {"KVBOX_API_URL": server.url, "KVBOX_TOKEN": "not-a-token-0123456789"})
    kv.fails("stores", "ls", message="(invalid-token). Check --token or KVBOX_TOKEN.")
    anonymous = Kv("remote", "nobody", {"KVBOX_API_URL": server.url})
    anonymous.fails("keys", "some-store", message="(token-not-provided)")


# --- real processes -------------------------------------------------------------------------


def test_real_processes_against_the_server(
    server: Any, remote_users: dict[str, tuple[str, str]], tmp_path: Path
) -> None:
    kv = _remote_kv(server, remote_users)
    store = unique("proc")
    created = kv.process("stores", "create", store)
    assert created.returncode == 0 and b"Created store" in created.stderr
    store_id = created.stdout.decode().strip()

    assert kv.process("put", store, "blob", "-", input=BIG).returncode == 0
    got = kv.process("get", store_id, "blob")
    assert got.returncode == 0 and got.stdout == BIG and got.stderr == b""
    keys = json.loads(kv.process("keys", store, "--json").stdout)
    assert [(k["key"], k["size"], k["contentType"], k["expiresAt"]) for k in keys] == [
        ("blob", len(BIG), BINARY_TYPE, None)
    ]

    missing = kv.process("get", unique("missing"), "blob")
    assert missing.returncode == 1 and b"was not found (record-not-found)" in missing.stderr
    assert missing.stdout == b"" and b"Traceback" not in missing.stderr
    bad_key = kv.process("get", store, "bad key")
    assert bad_key.returncode == 1 and b"(invalid-record-key)" in bad_key.stderr
    no_file = kv.process("put", store, "k", str(tmp_path / "absent.json"))
    assert no_file.returncode == 2 and b"does not exist" in no_file.stderr

    pulled = tmp_path / "pulled"
    assert kv.process("pull", store, str(pulled)).returncode == 0
    pushed = kv.process("push", str(pulled), "--store", unique("copy"), "--json")
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["stores"][0]["store"]["storageBytes"] == len(BIG)


def test_real_processes_on_a_data_directory(tmp_path: Path) -> None:
    kv = _local_kv(tmp_path / "data")
    assert kv.process("stores", "create", "mine").returncode == 0
    assert kv.process("put", "mine", "k", "-", input=b'{"x": 1}').returncode == 0
    assert kv.process("get", "mine", "k").stdout == b'{"x": 1}'
    listed = kv.process("stores", "ls")
    assert listed.returncode == 0 and b"mine" in listed.stdout
    failed = kv.process("keys", "theirs")
    assert failed.returncode == 1 and b'"theirs" was not found' in failed.stderr


# --- helpers --------------------------------------------------------------------------------


def test_content_type_from_the_file_name() -> None:
    assert guess_content_type(Path("a.json")) == JSON_TYPE
    assert guess_content_type(Path("a.txt")) == TEXT_TYPE
    assert guess_content_type(Path("a.png")) == "image/png"
    assert guess_content_type(Path("a.jpeg")) == "image/jpeg"
    assert guess_content_type(Path("a.unknownext")) == BINARY_TYPE
    assert guess_content_type(Path("README")) == BINARY_TYPE


def test_counting_reader_counts_back_on_rewind() -> None:
    seen: list[int] = []
    reader = CountingReader(io.BytesIO(b"x" * 100), seen.append)
    reader.read(60)
    reader.seek(0)  # a retried upload starts over
    reader.read()
    assert sum(seen) == 100 and reader.tell() == 100


def test_jobs_stop_at_the_first_failure() -> None:
    started: list[int] = []

    async def job(n: int) -> None:
        started.append(n)
        await asyncio.sleep(0)
        if n == 2:
            raise ValueError("two")

    with pytest.raises(ValueError, match="two"):
        asyncio.run(run_jobs(range(100), job, jobs=3))
    assert len(started) < 10


def test_webhooks_add_ls_deliveries_rm(kv: Kv, files: Path) -> None:
    store = unique("hooks")
    kv("stores", "create", store)
    added = kv.json("webhooks", "add", store, "http://93.184.216.34/hook", "--events", "RECORD.CREATED",
                    "--prefix", "in-")  # fmt: skip
    assert len(added["secret"]) >= 32 and added["eventTypes"] == ["RECORD.CREATED"]
    listed = kv.json("webhooks", "ls", store)
    assert [h["id"] for h in listed] == [added["id"]] and "secret" not in listed[0]
    assert added["id"] in kv("webhooks", "ls", store).stdout
    assert kv.json("webhooks", "deliveries", store, added["id"]) == []
    kv.fails("webhooks", "add", store, "http://127.0.0.1:9/x", message="(invalid-value)")
    kv("webhooks", "rm", store, added["id"])
    assert kv.json("webhooks", "ls", store) == []


def test_watch_prints_one_json_line_per_change(kv: Kv, files: Path) -> None:
    store = unique("watch")
    kv("stores", "create", store)
    for key in ("in-a", "out-b", "in-c"):
        kv("put", store, key, str(files / "notes.txt"))
    env = {**_clean_env(), **kv.env}
    proc = subprocess.Popen([*_command(), "watch", store, "--prefix", "in-"], stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        lines = [json.loads(proc.stdout.readline()) for _ in range(2)]
    finally:
        proc.kill()
        proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()
    assert [(c["sequence"], c["eventType"], c["key"]) for c in lines] == [
        (1, "RECORD.CREATED", "in-a"), (3, "RECORD.CREATED", "in-c")]  # fmt: skip
