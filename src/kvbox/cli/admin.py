"""`kvbox users` and `kvbox tokens`: administration straight on the data directory."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table

from kvbox.cli.options import BACKEND_SETTINGS, settings_from, with_settings
from kvbox.core.clock import iso_ms
from kvbox.core.errors import KvboxError, StoreNotFoundError
from kvbox.core.models import GeneralAccess
from kvbox.service.container import Services, build_services
from kvbox.service.principal import Principal

T = TypeVar("T")


def run_with_services(options: dict[str, Any], action: Callable[[Services], Awaitable[T]]) -> T:
    """Open the configured backend, run one action, close it; errors become CLI errors."""

    settings = settings_from(options)

    async def go() -> T:
        try:
            services = build_services(settings)
        except ValueError as err:  # e.g. an unknown --backend
            raise click.UsageError(str(err)) from err
        try:
            return await action(services)
        finally:
            await services.close()

    try:
        return asyncio.run(go())
    except KvboxError as err:
        raise click.ClickException(err.message) from err


@click.group()
def users() -> None:
    """Create and list users."""


@users.command("create")
@click.argument("username")
@click.option("--token", default=None, help="Use this token instead of generating one (at least 16 characters).")
@with_settings(*BACKEND_SETTINGS)
def users_create(username: str, token: str | None, **options: Any) -> None:
    """Create a user and print its API token (the last line of output)."""
    issued = run_with_services(options, lambda s: s.users.create_user(username, token=token))
    click.echo(f"Created user {issued.user.username} ({issued.user.id}). API token:", err=True)
    click.echo(issued.secret)


@users.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@with_settings(*BACKEND_SETTINGS)
def users_list(as_json: bool, **options: Any) -> None:
    """List users."""
    found = run_with_services(options, lambda s: s.users.list_users())
    if as_json:
        import json

        rows = [
            {
                "id": u.id,
                "username": u.username,
                "createdAt": iso_ms(u.created_at),
                "defaultGeneralAccess": u.default_general_access.value,
            }
            for u in found
        ]
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("ID", "Username", "Created", "Default access")
    for u in found:
        table.add_row(u.id, u.username, iso_ms(u.created_at), u.default_general_access.value)
    Console().print(table)


@click.group()
def tokens() -> None:
    """Create, list and revoke API tokens."""


@users.command("set-access")
@click.argument("username")
@click.argument("access", type=click.Choice(["RESTRICTED", "ANYONE_WITH_ID_CAN_READ"]))
@with_settings(*BACKEND_SETTINGS)
def users_set_access(username: str, access: str, **options: Any) -> None:
    """Set USERNAME's default general access, followed by stores set to FOLLOW_USER_SETTING."""
    user = run_with_services(options, lambda s: s.users.set_default_access(username, GeneralAccess(access)))
    click.echo(f"{user.username}: default general access is now {user.default_general_access.value}.")


@users.command("share")
@click.argument("store")
@click.argument("username")
@click.argument("permission", type=click.Choice(["READ", "WRITE", "MANAGE"], case_sensitive=False))
@with_settings(*BACKEND_SETTINGS)
def users_share(store: str, username: str, permission: str, **options: Any) -> None:
    """Share STORE (an ID, or OWNER~NAME) with USERNAME at PERMISSION, or change it."""

    async def go(s: Services) -> str:
        view = await s.sharing.grant(await _owner_of(s, store), store, username, permission)
        return f"{view.user.username} now has {view.grant.permission.name} on {store}."

    click.echo(run_with_services(options, go))


@users.command("unshare")
@click.argument("store")
@click.argument("username")
@with_settings(*BACKEND_SETTINGS)
def users_unshare(store: str, username: str, **options: Any) -> None:
    """Stop sharing STORE with USERNAME."""

    async def go(s: Services) -> bool:
        return await s.sharing.revoke(await _owner_of(s, store), store, username)

    if not run_with_services(options, go):
        raise click.ClickException(f"{store} is not shared with {username}.")
    click.echo(f"{store} is no longer shared with {username}.")


@users.command("grants")
@click.argument("store")
@with_settings(*BACKEND_SETTINGS)
def users_grants(store: str, **options: Any) -> None:
    """List the users STORE is shared with."""

    async def go(s: Services) -> list[tuple[str, str, str]]:
        views = await s.sharing.list(await _owner_of(s, store), store)
        return [(v.user.username, v.grant.permission.name, iso_ms(v.grant.created_at)) for v in views]

    table = Table("User", "Permission", "Since")
    for row in run_with_services(options, go):
        table.add_row(*row)
    Console().print(table)


async def _owner_of(s: Services, store: str) -> Principal:
    """Administration acts as the store's owner."""
    if "~" in store:
        owner_name = store.split("~", 1)[0]
        if not owner_name:
            raise click.UsageError("Name a store by ID or as OWNER~NAME.")
        return Principal(user=await s.users.find_user(owner_name))
    found = await s.index.get_store(store)
    if found is None:
        raise StoreNotFoundError()
    return Principal(user=await s.users.find_user(found.user_id))


@tokens.command("create")
@click.argument("username")
@click.option("--name", default="default", help="A label for the token.")
@click.option("--token", default=None, help="Use this token instead of generating one.")
@click.option("--read-only", is_flag=True, help="The token can only read.")
@click.option(
    "--store", "stores", multiple=True, metavar="STORE_ID", help="Limit the token to this store (repeat for several)."
)
@with_settings(*BACKEND_SETTINGS)
def tokens_create(
    username: str, name: str, token: str | None, read_only: bool, stores: tuple[str, ...], **options: Any
) -> None:
    """Create another API token for USERNAME and print it (the last line of output)."""
    issued = run_with_services(
        options,
        lambda s: s.users.create_token(username, name=name, token=token, read_only=read_only, store_ids=stores or None),
    )
    scope = []
    if read_only:
        scope.append("read-only")
    if stores:
        scope.append("stores " + ", ".join(stores))
    note = f" ({'; '.join(scope)})" if scope else ""
    click.echo(f"Created token {issued.token.id} for {issued.user.username}{note}:", err=True)
    click.echo(issued.secret)


@click.command("sweep")
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@with_settings(*BACKEND_SETTINGS, "unnamed_retention")
def sweep_command(as_json: bool, **options: Any) -> None:
    """Delete unnamed stores past their retention and expired records, and reclaim the space of
    deleted stores and records (for cron)."""

    async def go(s: Services) -> tuple[int, int, int]:
        stores_deleted = 0
        blobs_freed = 0
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), transient=True,
                      disable=as_json) as progress:  # fmt: skip
            task = progress.add_task("Sweeping expired stores")
            while (n := await s.retention.sweep()) > 0:
                stores_deleted += n
                progress.update(task, description=f"Deleted {stores_deleted} expired stores")
            progress.update(task, description="Reclaiming records of deleted stores")
            for _ in range(1_000_000):  # bounded: each pass removes up to a batch of rows
                freed = await s.housekeeper.reclaim()
                blobs_freed += freed
                if not await s.index.purge_pending():
                    break
            progress.update(task, description="Reclaiming expired records")
            expired = await s.housekeeper.sweeper.sweep_all()
        return stores_deleted, blobs_freed, expired

    deleted, freed, expired = run_with_services(options, go)
    if as_json:
        import json

        click.echo(json.dumps({"storesDeleted": deleted, "blobsFreed": freed, "recordsExpired": expired}))
    else:
        click.echo(
            f"Deleted {deleted} expired unnamed stores and {expired} expired records; freed {freed} record files."
        )


@tokens.command("list")
@click.argument("username")
@with_settings(*BACKEND_SETTINGS)
def tokens_list(username: str, **options: Any) -> None:
    """List USERNAME's tokens (IDs and labels; the secrets are never stored)."""
    found = run_with_services(options, lambda s: s.users.list_tokens(username))
    table = Table("Token ID", "Name", "Created", "Access", "Stores")
    for t in found:
        stores = ", ".join(t.store_ids) if t.store_ids is not None else "all"
        table.add_row(t.id, t.name, iso_ms(t.created_at), "read-only" if t.read_only else "full", stores)
    Console().print(table)


@tokens.command("revoke")
@click.argument("token")
@with_settings(*BACKEND_SETTINGS)
def tokens_revoke(token: str, **options: Any) -> None:
    """Revoke a token, given its ID or the token itself."""
    if not run_with_services(options, lambda s: s.users.revoke_token(token)):
        raise click.ClickException("No such token.")
    click.echo("Token revoked.")
