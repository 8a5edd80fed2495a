"""SDK fixtures: one configuration per mode, local (a temp folder) or remote (the real server)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kvbox.client import KvboxClient
from kvbox.sdk import Configuration, KeyValueStore, KeyValueStoreSync


@pytest.fixture(scope="session")
def sdk_token(server: Any) -> str:
    """A user of the SDK tests' own on the shared server."""
    username = f"sdk-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-m", "kvbox.cli", "users", "create", username, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip().splitlines()[-1]


def unique_name(prefix: str = "s") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["local", "remote"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Configuration]:
    """The same tests in both modes. Remotely, each test gets a fresh default store."""
    if request.param == "local":
        yield Configuration(storage_dir=str(tmp_path / "storage"))
        return
    server = request.getfixturevalue("server")
    token = request.getfixturevalue("sdk_token")
    with KvboxClient(token, api_url=server.url) as client:
        default = client.key_value_stores().get_or_create()
        yield Configuration(remote=True, api_url=server.url, token=token, default_store_id=default.id)
        client.key_value_store(default.id).delete()


@pytest.fixture
async def kvs(config: Configuration) -> AsyncIterator[KeyValueStore]:
    """A fresh named store; every store of the test is closed afterwards."""
    store = await KeyValueStore.open(name=unique_name(), configuration=config)
    yield store
    await store.drop()
    await KeyValueStore.close_all()


@pytest.fixture
def kvs_sync(config: Configuration) -> Iterator[KeyValueStoreSync]:
    store = KeyValueStoreSync.open(name=unique_name(), configuration=config)
    yield store
    store.drop()
    KeyValueStoreSync.close_all()
