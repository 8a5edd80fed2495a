"""`kvbox migrate` and `kvbox copy`: set up a backend, and move a deployment between backends.

The work is the service's (`service/deployment.py`, `service/copy.py`); these commands read
the options, show progress and turn failures into exit codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from kvbox.cli.options import BACKEND_SETTINGS, settings_from, with_settings
from kvbox.core.errors import KvboxError
from kvbox.service.copy import CopyPhase, Tally, copy_and_verify
from kvbox.service.deployment import describe_storage as where
from kvbox.service.deployment import migrate_storage
from kvbox.service.settings import Settings

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    try:
        return asyncio.run(coro)
    except KvboxError as err:
        raise click.ClickException(err.message) from err
    except ValueError as err:  # settings that name no usable backend
        raise click.UsageError(str(err)) from err


@click.command("migrate")
@with_settings(*BACKEND_SETTINGS)
def migrate_command(**options: Any) -> None:
    """Create or upgrade the index schema (PostgreSQL); safe to run from several nodes at once.

    Run it before the first `kvbox serve` and after each upgrade. The embedded SQLite
    index migrates itself whenever it opens; for it this only reports the version.
    """
    settings = settings_from(options)
    found, now = _run(migrate_storage(settings))
    if found == now:
        click.echo(f"Schema of {where(settings)} is current (version {now}).")
    else:
        click.echo(f"Migrated {where(settings)} from schema version {found} to {now}.")


def _side(specs: tuple[str, ...]) -> Settings:
    """Backend settings from `--from`/`--to` values: NAME=VALUE pairs (names as in
    `kvbox serve --help`), or a bare postgresql:// URL, s3:// URL or data directory."""
    values: dict[str, str] = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if sep and name.replace("-", "_") in BACKEND_SETTINGS:
            values[name.replace("-", "_")] = value
        elif spec.startswith(("postgresql://", "postgres://")):
            values["metadata_url"] = spec
        elif spec.startswith("s3://"):
            values["blob_url"] = spec
        elif sep:
            raise click.BadParameter(f"{name!r} is not a backend setting ({', '.join(BACKEND_SETTINGS)})")
        else:
            values["data_dir"] = spec
    try:
        settings = Settings.from_env({}, **values)  # only what is given: KVBOX_* variables would blur the sides
    except (TypeError, ValueError) as err:
        raise click.UsageError(str(err)) from err
    if settings.backend == "memory":
        raise click.UsageError("The memory backend holds nothing to copy.")
    return settings


_SIDE_HELP = "A backend setting NAME=VALUE, a postgresql:// or s3:// URL, or a data directory (repeatable)."


@click.command("copy")
@click.option("--from", "source", multiple=True, required=True, metavar="SETTING", help=_SIDE_HELP)
@click.option("--to", "target", multiple=True, required=True, metavar="SETTING", help=_SIDE_HELP)
def copy_command(source: tuple[str, ...], target: tuple[str, ...]) -> None:
    """Copy all users, tokens, stores and records from one backend into another, empty one,
    then read the target back and compare counts and checksums.

    Stop the servers of the source first. Example, embedded to scale-out and back:

        kvbox migrate --metadata-url postgresql://kv@db/kv --blob-url s3://bucket/kv

        kvbox copy --from ./kvbox-data --to postgresql://kv@db/kv --to s3://bucket/kv

        kvbox copy --from postgresql://kv@db/kv --from s3://bucket/kv --to ./restored
    """
    src, dst = _side(source), _side(target)
    with Console(stderr=True).status("Copying") as status:

        def show(phase: CopyPhase, tally: Tally) -> None:
            if phase is CopyPhase.COPYING:
                status.update(f"Copied {tally.stores} stores, {tally.records} records")
            else:
                status.update("Reading the target back")

        report = _run(copy_and_verify(src, dst, progress=show))
    copied, check = report.copied, report.check
    table = Table("", "users", "tokens", "stores", "grants", "records", "bytes", "sha256")
    table.add_row(f"from {where(src)}", *map(str, copied.counts()), copied.checksum)
    table.add_row(f"to {where(dst)}", *map(str, check.counts()), check.checksum)
    Console().print(table)
    if not report.verified:
        raise click.ClickException("The target does not match the source.")
    click.echo("Verified: the target matches the source.")
