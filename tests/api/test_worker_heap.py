"""A server worker settles its heap once started; an app built in process (tests, embedding)
leaves the interpreter's collector alone."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kvbox.server import GC_YOUNG_THRESHOLD, create_app
from kvbox.service.settings import Settings

# Runs in a fresh interpreter: freezing would otherwise reach the test process's own heap.
WORKER = """
import asyncio, gc, json
from kvbox.server import app_from_env

async def main():
    before = {"frozen": gc.get_freeze_count(), "threshold": gc.get_threshold()}
    app = app_from_env()
    inbox = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": kind})
    after = {}

    async def send(message):
        if message["type"] == "lifespan.startup.complete":
            after.update(frozen=gc.get_freeze_count(), threshold=gc.get_threshold())

    await app({"type": "lifespan"}, inbox.get, send)
    print(json.dumps({"before": before, "after": after}))

asyncio.run(main())
"""


def test_a_started_worker_freezes_its_start_up_heap_and_collects_less_often(tmp_path: Path) -> None:
    env = {**os.environ, "KVBOX_DATA_DIR": str(tmp_path), "KVBOX_LOG_FORMAT": "json"}
    done = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, timeout=60,
                          check=True)  # fmt: skip
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["before"]["frozen"] == 0
    assert seen["before"]["threshold"][0] == 700
    assert seen["after"]["frozen"] > 1000  # modules, routes and services
    assert seen["after"]["threshold"] == [GC_YOUNG_THRESHOLD, *seen["before"]["threshold"][1:]]


@pytest.mark.anyio
async def test_an_app_built_in_process_leaves_the_collector_alone(tmp_path: Path) -> None:
    threshold, frozen = gc.get_threshold(), gc.get_freeze_count()
    app = create_app(Settings(data_dir=tmp_path, backend="sqlite"))
    inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        inbox.put_nowait({"type": kind})
    started: list[tuple[tuple[int, int, int], int]] = []

    async def send(message: dict[str, str]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.append((gc.get_threshold(), gc.get_freeze_count()))

    await app({"type": "lifespan"}, inbox.get, send)  # type: ignore[arg-type]
    assert started == [(threshold, frozen)]
