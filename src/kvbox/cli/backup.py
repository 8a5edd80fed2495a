"""`kvbox backup`, `kvbox restore` and `kvbox verify`: online backups of the embedded backend,
and a check of any deployment's index against its blobs.

The work is the service's (`service/backup.py`, `service/verify.py`); these commands read the
options, show progress and turn the outcome into an exit code (1 for damage or failure).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from kvbox.cli.options import BACKEND_SETTINGS, settings_from, with_settings
from kvbox.core.errors import KvboxError
from kvbox.service.backup import backup_deployment, restore_deployment
from kvbox.service.deployment import describe_storage
from kvbox.service.settings import Settings, parse_duration_ms
from kvbox.service.verify import VerifyReport, verify_deployment

# A blob younger than this may belong to a write about to commit (as the server's orphan collection holds).
DEFAULT_ORPHAN_AGE = "15m"
SHOWN = 20


def _fail(err: Exception) -> click.ClickException:
    if isinstance(err, ValueError):
        return click.UsageError(str(err))
    return click.ClickException(err.message if isinstance(err, KvboxError) else str(err))


@click.command("backup")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the backup's manifest as JSON.")
@with_settings(*BACKEND_SETTINGS)
def backup_command(dest: Path, as_json: bool, **options: Any) -> None:
    """Back up the data directory into DEST (missing or empty) while the server runs.

    The copy is consistent: the index as of one moment and every record file it refers to.
    `kvbox restore DEST --data-dir DIR` turns it back into a data directory.
    """
    settings = settings_from(options)
    with Progress(TextColumn("Copying record files"), BarColumn(), MofNCompleteColumn(),
                  console=Console(stderr=True), transient=True, disable=as_json) as bar:  # fmt: skip
        task = bar.add_task("copy", total=None)

        def show(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            report = backup_deployment(settings, dest, progress=show)
        except (KvboxError, ValueError, OSError) as err:
            raise _fail(err) from err
    if as_json:
        click.echo(json.dumps(asdict(report)))
    else:
        click.echo(
            f"Backed up {report.stores} stores, {report.records} records and {report.files} record files "
            f"({report.file_bytes} bytes) of {settings.data_dir} into {dest}."
        )
    if report.missing:
        listed = ", ".join(report.missing[:SHOWN])
        raise click.ClickException(
            f"{len(report.missing)} record files the index refers to are missing from {settings.data_dir} "
            f"itself ({listed}); the backup holds everything else. Run `kvbox verify`."
        )


@click.command("restore")
@click.argument("source", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.option("--data-dir", "data_dir", required=True, type=click.Path(path_type=Path),
              help="The data directory to create (missing or empty).")  # fmt: skip
def restore_command(source: Path, data_dir: Path) -> None:
    """Restore the backup in SOURCE as a new data directory, then verify it.

    Start `kvbox serve --data-dir DIR` on it afterwards.
    """
    try:
        report = restore_deployment(source, data_dir)
    except (KvboxError, OSError) as err:
        raise _fail(err) from err
    click.echo(f"Restored the backup of {report.created_at} ({report.records} records) into {data_dir}.")
    settings = Settings(data_dir=data_dir)
    _report(settings, _verify(settings, "0s"), as_json=False)


def _verify(settings: Settings, orphan_min_age: str) -> VerifyReport:
    try:
        cutoff = int(time.time() * 1000) - parse_duration_ms(orphan_min_age)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--orphan-min-age") from err
    with Console(stderr=True).status("Verifying"):
        try:
            return asyncio.run(verify_deployment(settings, orphans_before_ms=cutoff))
        except (KvboxError, ValueError) as err:
            raise _fail(err) from err


@click.command("verify")
@click.option("--orphan-min-age", default=DEFAULT_ORPHAN_AGE, show_default=True, metavar="DURATION",
              help="Report blobs no record refers to when older than this (younger ones may be writes "
                   "about to commit; use 0s only when no server runs).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@with_settings(*BACKEND_SETTINGS)
def verify_command(orphan_min_age: str, as_json: bool, **options: Any) -> None:
    """Check the index against the blobs: every record's body present and of its size, every
    store's counters equal to its records, orphaned blobs. Exits 1 on damage.

    Prints counts and a SHA-256 over every row and body, the same as `kvbox copy` prints, so
    a backup and its restore can be compared.
    """
    settings = settings_from(options)
    _report(settings, _verify(settings, orphan_min_age), as_json=as_json)


def _report(settings: Settings, report: VerifyReport, *, as_json: bool) -> None:
    tally = report.tally
    if as_json:
        click.echo(json.dumps({
            "ok": report.ok, "users": tally.users, "tokens": tally.tokens, "stores": tally.stores,
            "grants": tally.grants, "records": tally.records, "bytes": tally.bytes, "blobs": report.blobs,
            "sha256": tally.checksum, "damage": [asdict(f) for f in report.damage], "orphans": report.orphans,
            "busy": report.busy,
        }))  # fmt: skip
    else:
        click.echo(
            f"Checked {tally.stores} stores, {tally.records} records ({tally.bytes} bytes, {report.blobs} blobs) "
            f"in {describe_storage(settings)}.\nsha256 {tally.checksum}"
        )
        for finding in report.damage[:SHOWN]:
            where = f"store {finding.store_id}" + (f", record {finding.key!r}" if finding.key is not None else "")
            click.echo(f"DAMAGE {finding.problem}: {where}: {finding.detail}")
        if report.orphans:
            click.echo(f"{len(report.orphans)} orphaned blobs (no record refers to them; the server removes them "
                       f"in time): {', '.join(report.orphans[:SHOWN])}")  # fmt: skip
        if report.busy:
            click.echo(f"{len(report.busy)} stores kept changing while checked: {', '.join(report.busy[:SHOWN])}")
    if not report.ok:
        raise click.ClickException(f"{len(report.damage)} problems found.")
    if not as_json:
        click.echo("No damage found.")
