"""How the data commands print: data on stdout (tables, or JSON with --json), messages on stderr."""

from __future__ import annotations

import json
from typing import Any

import click

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def note(message: str) -> None:
    """A message for the person at the terminal: stderr, so stdout stays data."""
    click.echo(message, err=True)


def human_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def records_count(n: int) -> str:
    return f"{n} record" if n == 1 else f"{n} records"


def when(value: str | None) -> str:
    """An ISO timestamp for a table: to the second, without the `T`."""
    return value[:19].replace("T", " ") if value else "-"
