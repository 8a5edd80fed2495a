"""Which CPUs the servers and the load generator run on (`taskset`), for per-core figures.

Unpinned, a one-worker server spreads its I/O threads over every core, the load generator's
too, so a one-worker figure measures more than one core. Pinned, each server process (every
worker and thread) runs on the last CPU and the load generator on the others: the server's
figure is what one core serves.
"""

from __future__ import annotations

import argparse
import os
import shutil

_pinned: tuple[str, str] | None = None


def pin_one_core() -> None:
    """From now on: servers started on the last CPU, the load generator on the others."""
    global _pinned
    count = os.cpu_count() or 1
    if count < 2:
        raise SystemExit("--pin needs at least 2 CPUs: one for the server, the rest for the load generator")
    if shutil.which("taskset") is None:
        raise SystemExit("--pin needs taskset (Debian package 'util-linux')")
    _pinned = (str(count - 1), f"0-{count - 2}")


def unpin() -> None:
    global _pinned
    _pinned = None


def add_pin_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pin",
        action="store_true",
        help="per-core figures: every server on the last CPU, the load generator on the others (1 worker)",
    )


def pin_if_asked(p: argparse.ArgumentParser, pin: bool, workers: list[int] | None) -> list[int] | None:
    """Pin for `--pin`, which measures one worker per server: the worker counts to run."""
    if not pin:
        return workers
    if workers and any(w != 1 for w in workers):
        p.error("--pin measures one worker per server: leave out --workers or pass --workers 1")
    pin_one_core()
    return [1]


def server_argv(argv: list[str]) -> list[str]:
    return ["taskset", "-c", _pinned[0], *argv] if _pinned else argv


def load_argv(argv: list[str]) -> list[str]:
    return ["taskset", "-c", _pinned[1], *argv] if _pinned else argv
