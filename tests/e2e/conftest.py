"""Helpers for the end-to-end suite: the `kvbox` command and fresh users on a running server."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from backing_services import COMMAND_ENV
from conftest import ServerProcess

KVBOX_SCRIPT = Path(sys.executable).with_name("kvbox")


def kvbox_cmd() -> list[str]:
    """The installed `kvbox` entry point, or `python -m kvbox.cli` when it is not on disk."""
    return [str(KVBOX_SCRIPT)] if KVBOX_SCRIPT.exists() else [sys.executable, "-m", "kvbox.cli"]


def run_kvbox(
    *args: str, data_dir: Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one `kvbox` admin command on a data directory (safe while a server uses it)."""
    proc = subprocess.run(
        [*kvbox_cmd(), *args, "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **COMMAND_ENV.get(data_dir, {}), **(env or {})},
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"kvbox {' '.join(args)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    assert lines, "expected output, got none"
    return lines[-1]


@dataclass(frozen=True)
class UserInfo:
    username: str
    token: str


def create_user(data_dir: Path, prefix: str = "user") -> UserInfo:
    """`kvbox users create <unique name>`; the token is the last line of stdout."""
    username = f"{prefix}-{secrets.token_hex(4)}"
    proc = run_kvbox("users", "create", username, data_dir=data_dir)
    token = last_line(proc.stdout)
    assert len(token) >= 16, proc.stdout
    return UserInfo(username=username, token=token)


def auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def new_connection_client(base_url: str, token: str | None = None) -> httpx.Client:
    """An HTTP client that opens a new connection for every request, so requests spread over workers."""
    return httpx.Client(
        base_url=base_url,
        headers={**auth(token), "Connection": "close"},
        limits=httpx.Limits(max_keepalive_connections=0),
        timeout=15,
    )


@pytest.fixture(scope="module")
def alice(server: ServerProcess) -> UserInfo:
    """A user of its own per module, so listings in one module see only that module's stores."""
    return create_user(server.data_dir, "alice")


@pytest.fixture(scope="module")
def bob(server: ServerProcess) -> UserInfo:
    return create_user(server.data_dir, "bob")
