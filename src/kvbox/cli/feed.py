"""`kvbox watch` (a store's changes as JSON lines) and `kvbox webhooks` (add, ls, rm,
deliveries), on a server or a data directory."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from kvbox.cli.output import echo_json, json_option, note, when
from kvbox.cli.session import TARGET_HELP, TargetOptions, run, target_options
from kvbox.cli.target import Target, resolve_store
from kvbox.core.feed import EVENT_TYPES


@click.command("watch", epilog=TARGET_HELP)
@click.argument("store")
@click.option("--prefix", default=None, metavar="P", help="Only changes of keys starting with P.")
@click.option("--after", type=click.IntRange(min=0), default=0, metavar="SEQ",
              help="Start after this sequence (default 0: every change still kept, then new ones).")  # fmt: skip
@target_options
def watch_command(store: str, prefix: str | None, after: int, target: TargetOptions) -> None:
    """Print each change of STORE as one JSON line, in order, as it happens, until interrupted
    (Ctrl-C). A lost connection is picked up where it was."""

    async def go(t: Target) -> None:
        row = await resolve_store(t, store)
        async for change in t.watch(row.id, prefix=prefix, after=after):
            click.echo(json.dumps(change, ensure_ascii=False, separators=(",", ":")))

    run(target, go)


@click.group("webhooks")
def webhooks() -> None:
    """A store's webhooks: POSTs of its record changes to a URL, signed and retried."""


@webhooks.command("add", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("url")
@click.option("--events", default=None, metavar="E,...",
              help=f"Event types to deliver (default all: {', '.join(EVENT_TYPES)}).")  # fmt: skip
@click.option("--prefix", default=None, metavar="P", help="Only changes of keys starting with P.")
@click.option("--secret", default=None, metavar="S", help="Signing secret (default: kvbox makes one and prints it).")
@json_option
@target_options
def add_command(
    store: str, url: str, events: str | None, prefix: str | None, secret: str | None, as_json: bool,
    target: TargetOptions,
) -> None:  # fmt: skip
    """Add a webhook to STORE that POSTs each matching change to URL."""
    types = [e.strip() for e in events.split(",") if e.strip()] if events is not None else None

    async def go(t: Target) -> dict[str, Any]:
        row = await resolve_store(t, store)
        return await t.add_webhook(row.id, url, event_types=types, prefix=prefix, secret=secret)

    hook = run(target, go)
    if as_json:
        echo_json(hook)
        return
    note(f"Added webhook {hook['id']} -> {hook['requestUrl']}.")
    if "secret" in hook:
        note(f"Signing secret (shown once): {hook['secret']}")


@webhooks.command("ls", epilog=TARGET_HELP)
@click.argument("store")
@json_option
@target_options
def ls_command(store: str, as_json: bool, target: TargetOptions) -> None:
    """List the webhooks of STORE."""

    async def go(t: Target) -> list[dict[str, Any]]:
        return await t.list_webhooks((await resolve_store(t, store)).id)

    hooks = run(target, go)
    if as_json:
        echo_json(hooks)
        return
    table = Table("ID", "URL", "Events", "Prefix", "Enabled")
    for h in hooks:
        table.add_row(h["id"], h["requestUrl"], ", ".join(h["eventTypes"]), h["keyPrefix"] or "-",
                      "yes" if h["isEnabled"] else "no")  # fmt: skip
    Console().print(table)


@webhooks.command("rm", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("webhook_id", metavar="ID")
@target_options
def rm_command(store: str, webhook_id: str, target: TargetOptions) -> None:
    """Delete webhook ID of STORE, with its pending deliveries."""

    async def go(t: Target) -> None:
        await t.delete_webhook((await resolve_store(t, store)).id, webhook_id)

    run(target, go)
    note(f"Deleted webhook {webhook_id}.")


@webhooks.command("deliveries", epilog=TARGET_HELP)
@click.argument("store")
@click.argument("webhook_id", metavar="ID")
@json_option
@target_options
def deliveries_command(store: str, webhook_id: str, as_json: bool, target: TargetOptions) -> None:
    """Show the pending deliveries and last 100 attempts of webhook ID, newest first."""

    async def go(t: Target) -> list[dict[str, Any]]:
        return await t.webhook_deliveries((await resolve_store(t, store)).id, webhook_id)

    attempts = run(target, go)
    if as_json:
        echo_json(attempts)
        return
    table = Table("When", "Delivery", "Seq", "Event", "Attempt", "Status", "HTTP", "ms", "Error")
    for a in attempts:
        table.add_row(when(a["createdAt"]), a["deliveryId"], str(a["sequence"]), a["eventType"], str(a["attempt"]),
                      a["status"], str(a["responseStatus"] or "-"), str(a["durationMillis"] or "-"),
                      a["error"] or "")  # fmt: skip
    Console().print(table)
