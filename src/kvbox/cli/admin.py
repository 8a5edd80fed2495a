"""`kvbox users` and `kvbox tokens`: administration straight on the data directory."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.table import Table

from kvbox.cli.options import BACKEND_SETTINGS, settings_from, with_settings
from kvbox.core.clock import iso_ms
from kvbox.core.errors import KvboxError
from kvbox.service.container import Services, build_services

T = TypeVar("T")


def run_with_services(options: dict[str, Any], action: Callable[[Services], Awaitable[T]]) -> T:
    """Open the configured backend, run one action, close it; errors become CLI errors."""

    async def go() -> T:
        services = build_services(settings_from(options))
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
            {"id": u.id, "username": u.username, "createdAt": iso_ms(u.created_at),
             "defaultGeneralAccess": u.default_general_access.value}
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


@tokens.command("create")
@click.argument("username")
@click.option("--name", default="default", help="A label for the token.")
@click.option("--token", default=None, help="Use this token instead of generating one.")
@with_settings(*BACKEND_SETTINGS)
def tokens_create(username: str, name: str, token: str | None, **options: Any) -> None:
    """Create another API token for USERNAME and print it (the last line of output)."""
    issued = run_with_services(options, lambda s: s.users.create_token(username, name=name, token=token))
    click.echo(f"Created token {issued.token.id} for {issued.user.username}:", err=True)
    click.echo(issued.secret)


@tokens.command("list")
@click.argument("username")
@with_settings(*BACKEND_SETTINGS)
def tokens_list(username: str, **options: Any) -> None:
    """List USERNAME's tokens (IDs and labels; the secrets are never stored)."""
    found = run_with_services(options, lambda s: s.users.list_tokens(username))
    table = Table("Token ID", "Name", "Created")
    for t in found:
        table.add_row(t.id, t.name, iso_ms(t.created_at))
    Console().print(table)


@tokens.command("revoke")
@click.argument("token")
@with_settings(*BACKEND_SETTINGS)
def tokens_revoke(token: str, **options: Any) -> None:
    """Revoke a token, given its ID or the token itself."""
    if not run_with_services(options, lambda s: s.users.revoke_token(token)):
        raise click.ClickException("No such token.")
    click.echo("Token revoked.")
