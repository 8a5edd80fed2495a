"""`kvbox serve`: run the API server (granian, one or more worker processes)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import click

from kvbox.cli.options import settings_from, with_settings
from kvbox.core.errors import KvboxError
from kvbox.service.container import build_services
from kvbox.service.deployment import describe_storage
from kvbox.service.settings import Settings, resolve_log_format

ADMIN_TOKEN_ENV = "KVBOX_ADMIN_TOKEN"
# What granian loads in each worker process; the workers read their settings from KVBOX_*.
APP_FACTORY = "kvbox.server:app_from_env"
# granian's own lines (start, stop, worker restarts) as JSON, like kvbox's.
GRANIAN_JSON_LOGGING = Path(__file__).with_name("granian-logging.json")


def granian_argv(settings: Settings) -> list[str]:
    """The command line that runs granian on kvbox's app with these settings.

    On SIGTERM granian stops accepting connections and lets the workers finish the requests
    in flight; a worker still busy after `--shutdown-timeout` seconds is killed. The access
    log is kvbox's own (with request ids and route patterns), not granian's.
    """
    json_logs = resolve_log_format(settings.log_format) == "json"
    logging = ["--log-config", str(GRANIAN_JSON_LOGGING)] if json_logs else []
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory", "--log", "--no-access-log", *logging,
        "--host", settings.host, "--port", str(settings.port), "--workers", str(settings.workers),
        "--workers-kill-timeout", str(settings.shutdown_timeout), APP_FACTORY,
    ]  # fmt: skip


def metrics_dir(settings: Settings) -> Path:
    """The directory this server's workers share their metrics in, emptied: the one given, or
    DATA_DIR/metrics/PID (the directories of servers no longer running are removed)."""
    if settings.metrics_dir is not None:
        chosen = settings.metrics_dir
    else:
        root = settings.data_dir / "metrics"
        chosen = root / str(os.getpid())
        if root.is_dir():
            for entry in root.iterdir():
                if entry.name.isdigit() and not _running(int(entry.name)):
                    shutil.rmtree(entry, ignore_errors=True)
    chosen.mkdir(parents=True, exist_ok=True)
    for stale in chosen.glob("*.json"):
        stale.unlink(missing_ok=True)
    return chosen


def _running(pid: int) -> bool:
    """Whether a process runs under this id (other than this one, which starts afresh)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def _bootstrap(settings: Settings) -> str | None:
    """On first start (no users) create user `admin`; return its token to print once."""
    services = build_services(settings)
    try:
        if await services.users.list_users():
            return None
        try:
            issued = await services.users.create_user("admin", token=os.environ.get(ADMIN_TOKEN_ENV) or None)
        except KvboxError:
            if await services.users.list_users():
                return None  # another node sharing the database bootstrapped at the same moment
            raise
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
    "record_cache_size",
    "durable",
    "backend",
    "metadata_url",
    "blob_url",
    "s3_endpoint",
    "metadata_pool_size",
    "unnamed_retention",
    "sweep_interval",
    "rate_limits",
    "rate_limit_store",
    "rate_limit_records",
    "rate_limit_user",
    "trusted_proxies",
    "shutdown_timeout",
    "access_log",
    "log_format",
    "metrics",
    "metrics_token",
    "metrics_public",
    "metrics_dir",
    "changes",
    "changes_retention",
    "webhook_allow_private",
    "webhook_retry_delay",
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
    except KvboxError as err:  # e.g. an unreachable database or one `kvbox migrate` has not set up
        raise click.ClickException(err.message) from err
    if token:
        click.echo("=" * 72)
        click.echo("Created user 'admin'. Its API token (shown only this once):")
        click.echo(f"\n    {token}\n")
        click.echo("=" * 72)
    if settings.metrics:
        settings.metrics_dir = metrics_dir(settings)
    os.environ.update(settings.to_env())
    stored = describe_storage(settings) if settings.metadata_url else f"data in {settings.data_dir}"
    click.echo(f"kvbox listening on http://{settings.host}:{settings.port} ({stored})")
    sys.stdout.flush()

    # Hand over to granian in a fresh interpreter (same process id): the process that forks
    # the workers then holds granian alone, not the CLI, the bootstrap and the database
    # driver, so neither it nor each worker it forks carries them.
    argv = granian_argv(settings)
    os.execv(argv[0], argv)
