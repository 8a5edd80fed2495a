"""Client fixtures: a user of its own on the shared real server, and a fresh store per test."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from kvbox.client import KvboxClient, KvboxClientAsync, Record, StoreClient, StoreClientAsync


def create_user(server: Any, prefix: str) -> str:
    """A new user on the running server, made with the CLI; returns its API token."""
    username = f"{prefix}-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        [sys.executable, "-m", "kvbox.cli", "users", "create", username, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip().splitlines()[-1]


def value_of(record: Record | None) -> Any:
    """The value of a record the client returned (it must exist)."""
    assert record is not None
    return record.value


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def token(server: Any) -> str:
    return create_user(server, "client")


@pytest.fixture
def client(server: Any, token: str) -> Iterator[KvboxClient]:
    with KvboxClient(token, api_url=server.url, min_delay_between_retries=0.0, max_retries=2) as c:
        yield c


@pytest.fixture
async def aclient(server: Any, token: str) -> AsyncIterator[KvboxClientAsync]:
    async with KvboxClientAsync(token, api_url=server.url, min_delay_between_retries=0.0, max_retries=2) as c:
        yield c


@pytest.fixture
def store(client: KvboxClient) -> Iterator[StoreClient]:
    info = client.key_value_stores().get_or_create(unique_name())
    yield client.key_value_store(info.id)
    client.key_value_store(info.id).delete()


@pytest.fixture
async def astore(aclient: KvboxClientAsync) -> AsyncIterator[StoreClientAsync]:
    info = await aclient.key_value_stores().get_or_create(unique_name())
    yield aclient.key_value_store(info.id)
    await aclient.key_value_store(info.id).delete()
