"""The `kvbox` command."""

from __future__ import annotations

import click

from kvbox import __version__
from kvbox.cli.admin import sweep_command, tokens, users
from kvbox.cli.backend import copy_command, migrate_command
from kvbox.cli.backup import backup_command, restore_command, verify_command
from kvbox.cli.feed import watch_command, webhooks
from kvbox.cli.folders import pull_command, push_command
from kvbox.cli.records import get_command, keys_command, put_command, rm_command
from kvbox.cli.serve import serve
from kvbox.cli.stores import stores


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kvbox")
def cli() -> None:
    """kvbox: a self-hosted key-value store speaking the Apify API v2."""


cli.add_command(serve)
cli.add_command(users)
cli.add_command(tokens)
cli.add_command(sweep_command)
cli.add_command(migrate_command)
cli.add_command(copy_command)
cli.add_command(backup_command)
cli.add_command(restore_command)
cli.add_command(verify_command)
for _command in (stores, keys_command, get_command, put_command, rm_command, push_command, pull_command,
                 watch_command, webhooks):  # fmt: skip
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="kvbox")
