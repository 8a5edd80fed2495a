"""`kvbox stores ls|create|rename|rm|info`: the key-value stores of a server or a data directory."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from kvbox.cli.output import echo_json, human_size, json_option, note, when
from kvbox.cli.session import TARGET_HELP, TargetOptions, run, target_options
from kvbox.cli.target import DataError, StoreRow, Target, resolve_store
from kvbox.service.settings import parse_duration_ms


@click.group("stores")
def stores() -> None:
    """List, create, rename, delete and describe key-value stores, and set their record expiry."""


@stores.command("ls", epilog=TARGET_HELP)
@click.option("--unnamed", is_flag=True, help="Include unnamed stores.")
@json_option
@target_options
def stores_ls(unnamed: bool, as_json: bool, target: TargetOptions) -> None:
    """List the stores you own or that are shared with you."""
    rows = run(target, lambda t: t.list_stores(unnamed=unnamed))
    if as_json:
        echo_json([r.to_json() for r in rows])
        return
    table = Table("Name", "ID", "Owner", "Records", "Size", "Modified")
    for r in rows:
        table.add_row(
            r.name or "(unnamed)",
            r.id,
            r.username or "-",
            str(r.record_count or 0),
            human_size(r.storage_bytes),
            when(r.modified_at),
        )
    Console().print(table)


@stores.command("create", epilog=TARGET_HELP)
@click.argument("name", required=False)
@json_option
@target_options
def stores_create(name: str | None, as_json: bool, target: TargetOptions) -> None:
    """Create a store called NAME (or an unnamed one) and print its ID; an existing NAME is kept."""
    row, created = run(target, lambda t: t.create_store(name))
    if as_json:
        echo_json({**row.to_json(), "created": created})
        return
    note(f"{'Created' if created else 'Already exists:'} store {row.label}.")
    click.echo(row.id)


@stores.command("rename", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("new_name")
@json_option
@target_options
def stores_rename(store: str, new_name: str, as_json: bool, target: TargetOptions) -> None:
    """Rename STORE (an ID, a name, or OWNER~NAME) to NEW_NAME."""

    async def go(t: Target) -> StoreRow:
        return await t.rename_store((await resolve_store(t, store)).id, new_name)

    row = run(target, go)
    if as_json:
        echo_json(row.to_json())
    else:
        note(f"Renamed {store} to {row.label}.")


@stores.command("rm", epilog=TARGET_HELP)
@click.argument("store")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@target_options
def stores_rm(store: str, yes: bool, target: TargetOptions) -> None:
    """Delete STORE with all its records (asks first when run in a terminal)."""

    async def go(t: Target) -> StoreRow:
        row = await resolve_store(t, store)
        if not yes and sys.stdin.isatty():
            count = f"{row.record_count} records" if row.record_count is not None else "its records"
            click.confirm(f"Delete store {row.label} and {count}?", abort=True, err=True)
        await t.delete_store(row.id)
        return row

    row = run(target, go)
    note(f"Deleted store {row.label}.")


@stores.command("info", epilog=TARGET_HELP)
@click.argument("store")
@json_option
@target_options
def stores_info(store: str, as_json: bool, target: TargetOptions) -> None:
    """Show STORE's ID, name, owner, size and timestamps."""
    row = run(target, lambda t: resolve_store(t, store))
    if as_json:
        echo_json(row.to_json())
        return
    table = Table("Field", "Value", show_header=False)
    fields = [
        ("ID", row.id),
        ("Name", row.name or "(unnamed)"),
        ("Owner", row.username or row.user_id or "-"),
        ("Records", str(row.record_count if row.record_count is not None else "-")),
        ("Size", human_size(row.storage_bytes)),
        ("General access", row.general_access or "-"),
        ("Created", when(row.created_at)),
        ("Modified", when(row.modified_at)),
        ("Accessed", when(row.accessed_at)),
        ("Expires", when(row.expires_at) if row.expires_at else "never"),
        ("Record expiry", rules_text(row.record_expiry)),
    ]
    for name, value in fields:
        table.add_row(name, value)
    Console().print(table)


def rules_text(rules: tuple[tuple[str, int], ...]) -> str:
    """`tmp-: 1h; everything else: 1d`, or `none`."""
    if not rules:
        return "none"
    return "; ".join(f"{f'{prefix}*' if prefix else 'every key'}: {seconds_text(n)}" for prefix, n in rules)


def seconds_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _seconds(value: str) -> int:
    try:
        ms = parse_duration_ms(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="DURATION") from None
    if ms < 1000 or ms % 1000:
        raise click.BadParameter(f"{value!r} is not a whole number of seconds (at least 1s).", param_hint="DURATION")
    return ms // 1000


@stores.command("set-expiry", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("duration", required=False)
@click.option(
    "--prefix", default="", metavar="P", help="The rule applies to keys starting with P (default: every key)."
)
@click.option("--clear", is_flag=True, help="Remove the rule for --prefix (without --prefix: every rule).")
@json_option
@target_options
def stores_set_expiry(
    store: str, duration: str | None, prefix: str, clear: bool, as_json: bool, target: TargetOptions
) -> None:
    """Make records of STORE expire DURATION (1d, 12h, 30m, 90s) after their last write.

    The rule covers records written before it too; the longest matching --prefix wins, and a
    record's own expiry wins over rules. Needs MANAGE on the store.
    """
    if clear == (duration is not None):
        raise click.UsageError("Give a DURATION, or --clear.")
    seconds = _seconds(duration) if duration is not None else 0
    prefix_given = click.get_current_context().get_parameter_source("prefix") is not click.core.ParameterSource.DEFAULT

    async def go(t: Target) -> StoreRow:
        row = await resolve_store(t, store)
        rules = dict(row.record_expiry)
        if clear and not prefix_given:
            rules = {}
        elif clear:
            if prefix not in rules:
                raise DataError(f"Store {row.label} has no expiry rule for prefix {prefix!r}.")
            del rules[prefix]
        else:
            rules[prefix] = seconds
        return await t.set_record_expiry(row.id, sorted(rules.items()))

    row = run(target, go)
    if as_json:
        echo_json(row.to_json())
    else:
        note(f"Record expiry of {row.label}: {rules_text(row.record_expiry)}.")
