"""Moving bytes for the data commands: progress bars, counted reads, a few transfers at a time.

Progress goes to stderr through rich, and only to a terminal: never with --json, never into
a pipe or a log file, where it would only be noise.
"""

from __future__ import annotations

import asyncio
import io
import os
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import BinaryIO, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from kvbox.cli.target import Download

T = TypeVar("T")

# Single records smaller than this finish before a bar would be worth drawing.
LARGE = 1 << 20


def show_progress(*, as_json: bool, size: int | None = None, always: bool = False) -> bool:
    if as_json or not sys.stderr.isatty():
        return False
    return always or (size is not None and size >= LARGE)


class Transfer:
    """One progress bar of bytes, with a record count when `records` is given."""

    def __init__(self, description: str, *, total: int | None, records: int | None = None, enabled: bool) -> None:
        self._records = records
        self._done = 0
        columns = [
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        ]
        if records is not None:
            columns.append(TextColumn("{task.fields[count]}"))
        self._progress = Progress(*columns, console=Console(stderr=True), disable=not enabled, transient=True)
        self._task: TaskID = self._progress.add_task(description, total=total, count=self._count_text())

    def _count_text(self) -> str:
        return f"{self._done}/{self._records} records" if self._records is not None else ""

    def __enter__(self) -> Transfer:
        self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def advance(self, n: int) -> None:
        if n:
            self._progress.advance(self._task, n)

    def record_done(self) -> None:
        self._done += 1
        self._progress.update(self._task, count=self._count_text())


def _is_regular(raw: BinaryIO) -> bool | None:
    """Whether the file is a regular file (None: in memory, no descriptor)."""
    try:
        return stat.S_ISREG(os.fstat(raw.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        return None


class CountingReader:
    """A binary file that reports how far reading got; a rewind (an upload retried) counts back.

    Only a regular file shows its descriptor (the client takes its size from it) and may be
    rewound: a device or a pipe has no size to announce and cannot be sent twice.
    """

    def __init__(self, raw: BinaryIO, on_progress: Callable[[int], None]) -> None:
        self._raw = raw
        self._on_progress = on_progress
        self._regular = _is_regular(raw)

    def read(self, size: int = -1, /) -> bytes:
        data = self._raw.read(size)
        self._on_progress(len(data))
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        before = self._raw.tell()
        after = self._raw.seek(offset, whence)
        self._on_progress(after - before)
        return after

    def tell(self) -> int:
        return self._raw.tell()

    def seekable(self) -> bool:
        return self._regular is not False and self._raw.seekable()

    def fileno(self) -> int:
        if not self._regular:
            raise io.UnsupportedOperation("not a regular file")
        return self._raw.fileno()


async def counted(download: Download, on_progress: Callable[[int], None]) -> AsyncIterator[bytes]:
    """A download's content, reporting stored bytes received (the bar's unit) as they come."""
    seen = 0
    async for chunk in download.chunks():
        now = download.transferred
        on_progress(now - seen)
        seen = now
        yield chunk


async def run_jobs(items: Iterable[T], job: Callable[[T], Awaitable[None]], *, jobs: int) -> None:
    """Run `job` on every item, `jobs` at a time. The first failure stops new jobs and is raised
    once the running ones have finished."""
    pending = iter(items)
    failures: list[BaseException] = []

    async def worker() -> None:
        for item in pending:  # one shared iterator: each item goes to exactly one worker
            if failures:
                return
            try:
                await job(item)
            except Exception as err:
                failures.append(err)
                return

    await asyncio.gather(*(worker() for _ in range(max(1, jobs))))
    if failures:
        raise failures[0]
