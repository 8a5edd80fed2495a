"""`kvbox stores ls|create|rename|rm|info`: the key-value stores of a server or a data directory."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from kvbox.cli.output import echo_json, human_size, json_option, note, when
from kvbox.cli.session import TARGET_HELP, TargetOptions, run, target_options
from kvbox.cli.target import StoreRow, Target, resolve_store


@click.group("stores")
def stores() -> None:
    """List, create, rename, delete and describe key-value stores."""


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
    ]
    for name, value in fields:
        table.add_row(name, value)
    Console().print(table)
