"""`kvbox serve`: run the API server (granian, one or more worker processes)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import Any

import click

from kvbox.cli.options import settings_from, with_settings
from kvbox.service.container import build_services
from kvbox.service.settings import Settings

ADMIN_TOKEN_ENV = "KVBOX_ADMIN_TOKEN"


async def _bootstrap(settings: Settings) -> str | None:
    """On first start (no users) create user `admin`; return its token to print once."""
    services = build_services(settings)
    try:
        if await services.users.list_users():
            return None
        issued = await services.users.create_user("admin", token=os.environ.get(ADMIN_TOKEN_ENV) or None)
        return issued.secret
    finally:
        await services.close()


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@click.command()
@with_settings(
    "data_dir",
    "host",
    "port",
    "public_url",
    "workers",
    "max_record_size",
    "inline_threshold",
    "durable",
    "backend",
    "unnamed_retention",
    "sweep_interval",
    "rate_limits",
    "rate_limit_store",
    "rate_limit_records",
    "rate_limit_user",
)
def serve(**options: Any) -> None:
    """Start the API server."""
    settings = settings_from(options)
    if settings.backend == "memory":
        raise click.UsageError("The memory backend is for tests only; serve with the sqlite backend.")
    if settings.port == 0:
        settings.port = _free_port(settings.host)
    if settings.workers < 1:
        raise click.UsageError("--workers must be at least 1.")
    try:
        token = asyncio.run(_bootstrap(settings))
    except ValueError as err:  # e.g. an unknown backend
        raise click.UsageError(str(err)) from err
    if token:
        click.echo("=" * 72)
        click.echo("Created user 'admin'. Its API token (shown only this once):")
        click.echo(f"\n    {token}\n")
        click.echo("=" * 72)
    os.environ.update(settings.to_env())
    click.echo(f"kvbox listening on http://{settings.host}:{settings.port} (data in {settings.data_dir})")
    sys.stdout.flush()

    from granian import Granian
    from granian.constants import Interfaces

    Granian(
        "kvbox.api.app:app_from_env",
        factory=True,
        address=settings.host,
        port=settings.port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        log_enabled=True,
        log_access=False,
    ).serve()
