"""`Actor` helpers in both modes: input (with `ACTOR_INPUT_KEY`), values, opening stores."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from conftest import ServerProcess
from kvbox.sdk import Actor, Configuration, KeyValueStore

from .conftest import unique_name

pytestmark = pytest.mark.anyio


async def test_input_and_values(config: Configuration) -> None:
    async with Actor(configuration=config) as actor:
        assert await actor.get_input() is None
        await actor.set_value("INPUT", {"url": "https://example.com"})
        assert await actor.get_input() == {"url": "https://example.com"}
        await actor.set_value("OUTPUT", "done", content_type="text/plain")
        assert await actor.get_value("OUTPUT") == "done"
        assert await actor.get_value("missing", "fallback") == "fallback"
        await actor.set_value("OUTPUT", None)
        assert await actor.get_value("OUTPUT") is None
    assert not actor.is_initialized


async def test_input_after_a_metamorph(config: Configuration) -> None:
    metamorphed = dataclasses.replace(config, input_key="INPUT-METAMORPH-1")
    async with Actor(configuration=config) as first:
        await first.set_value("INPUT", {"original": True})
        await first.set_value("INPUT-METAMORPH-1", {"metamorphed": True})
    async with Actor(configuration=metamorphed) as second:
        assert await second.get_input() == {"metamorphed": True}
        store = await second.open_key_value_store()
        await store.delete_value("INPUT")
        await store.delete_value("INPUT-METAMORPH-1")


async def test_open_key_value_store(config: Configuration) -> None:
    async with Actor(configuration=config) as actor:
        default = await actor.open_key_value_store()
        await actor.set_value("k", 1)
        assert await default.get_value("k") == 1
        name = unique_name()
        named = await actor.open_key_value_store(name=name)
        assert named.name == name and named is not default
        assert await actor.open_key_value_store(id=named.id) is named
        await named.drop()
        await default.delete_value("k")


async def test_helpers_need_an_initialized_actor(config: Configuration) -> None:
    actor = Actor(configuration=config)
    with pytest.raises(RuntimeError):
        await actor.get_input()
    with pytest.raises(RuntimeError):
        await actor.open_key_value_store()
    await actor.init()
    with pytest.raises(RuntimeError):
        await actor.init()
    await actor.exit()
    await actor.exit()


async def test_local_input_file_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Actor reads its configuration from the environment: storage dir and input key."""
    for var in ("KVBOX_API_URL", "APIFY_IS_AT_HOME", "APIFY_LOCAL_STORAGE_DIR", "CRAWLEE_STORAGE_DIR"):
        monkeypatch.delenv(var, raising=False)
    folder = tmp_path / "store" / "key_value_stores" / "default"
    folder.mkdir(parents=True)
    (folder / "INPUT.json").write_text('{"from": "file"}')
    (folder / "INPUT-METAMORPH-1.json").write_text('{"from": "metamorph"}')
    monkeypatch.setenv("KVBOX_STORAGE_DIR", str(tmp_path / "store"))
    async with Actor:
        assert await Actor.get_input() == {"from": "file"}
    monkeypatch.setenv("ACTOR_INPUT_KEY", "INPUT-METAMORPH-1")
    async with Actor:
        assert await Actor.get_input() == {"from": "metamorph"}
        assert Actor.configuration.input_key == "INPUT-METAMORPH-1"
    await KeyValueStore.close_all()


async def test_force_cloud_needs_a_server(tmp_path: Path) -> None:
    async with Actor(configuration=Configuration(storage_dir=str(tmp_path))) as actor:
        with pytest.raises(RuntimeError, match="KVBOX_API_URL"):
            await actor.open_key_value_store(name="x", force_cloud=True)


async def test_force_cloud_opens_a_remote_store(tmp_path: Path, server: ServerProcess, sdk_token: str) -> None:
    local = Configuration(storage_dir=str(tmp_path), api_url=server.url, token=sdk_token)
    async with Actor(configuration=local) as actor:
        await actor.set_value("here", "local")
        remote = await actor.open_key_value_store(name=unique_name(), force_cloud=True)
        await remote.set_value("there", "remote")
        assert await remote.get_value("there") == "remote"
        assert await remote.get_value("here") is None
        assert (tmp_path / "key_value_stores" / "default" / "here.txt").exists()
        await remote.drop()
