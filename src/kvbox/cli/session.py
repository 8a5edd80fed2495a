"""One data command's session: the target options, opening the target, running one action on it.

With --api-url (or KVBOX_API_URL) the target is that server; otherwise the data directory
(--data-dir) in this process, as the user --user names. Failures the server or the backend
report exit with code 1 and a message a shell user can act on; usage errors with code 2.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from kvbox.cli.options import setting_option
from kvbox.cli.target import DataError, Target
from kvbox.core.errors import KvboxError

T = TypeVar("T")

TARGET_HELP = (
    "Without --api-url the command works in this process on the data directory (--data-dir), "
    "as the user named by --user (default: the only user, or admin), with the same permission "
    "checks as the API. With --api-url it talks to that server as the owner of --token."
)


@dataclass(frozen=True, slots=True)
class TargetOptions:
    """The target options of one command, checked for conflicts."""

    api_url: str | None
    token: str | None
    data_dir: str | None
    user: str | None


def _from_command_line(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE


def _check_options(
    ctx: click.Context, api_url: str | None, token: str | None, data_dir: str | None, user: str | None
) -> TargetOptions:
    api_url = (api_url or "").strip() or None
    if api_url is not None and data_dir is not None:
        if _from_command_line(ctx, "api_url"):
            raise click.UsageError(
                "--api-url and --data-dir exclude each other: the first talks to a server, "
                "the second opens a data directory in this process."
            )
        api_url = None  # --data-dir on the command line beats KVBOX_API_URL from the environment
    if api_url is not None:
        if not api_url.startswith(("http://", "https://")):
            raise click.BadParameter(f"{api_url!r} is not an http:// or https:// URL.", param_hint="--api-url")
        if user is not None and _from_command_line(ctx, "user"):
            raise click.UsageError("--user applies to a local data directory; with --api-url the token decides.")
        return TargetOptions(api_url=api_url, token=token or None, data_dir=None, user=None)
    if token and _from_command_line(ctx, "token"):
        raise click.UsageError("--token needs --api-url (or KVBOX_API_URL); a local data directory uses --user.")
    return TargetOptions(api_url=None, token=None, data_dir=data_dir, user=user or None)


def target_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add --api-url, --token, --data-dir and --user; the command receives `target: TargetOptions`."""

    @functools.wraps(fn)
    def command(
        *args: Any, api_url: str | None, token: str | None, data_dir: str | None, user: str | None, **kwargs: Any
    ) -> Any:
        options = _check_options(click.get_current_context(), api_url, token, data_dir, user)
        return fn(*args, target=options, **kwargs)

    decorators: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--api-url",
            envvar="KVBOX_API_URL",
            metavar="URL",
            help="Work on the kvbox server at URL instead of a local data directory [env KVBOX_API_URL].",
        ),
        click.option(
            "--token", envvar="KVBOX_TOKEN", metavar="TOKEN", help="API token for --api-url [env KVBOX_TOKEN]."
        ),
        setting_option("data_dir"),
        click.option(
            "--user",
            envvar="KVBOX_USER",
            metavar="USERNAME",
            help="Act as this user on the local data directory (default: the only user, or admin) [env KVBOX_USER].",
        ),
    ]
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


async def open_target(options: TargetOptions) -> Target:
    """The server the options name, or else the data directory, as a `Target`."""
    # Each target loads only when chosen: the client and httpx are not needed in local mode.
    if options.api_url is not None:
        from kvbox.cli.remote import RemoteTarget

        return RemoteTarget.connect(options.api_url, options.token)
    from kvbox.cli.local import LocalTarget

    return await LocalTarget.open(options.data_dir, options.user)


def _typed(message: str, error_type: str) -> str:
    """`Record was not found (TYPE).`: the message, then the Apify error type."""
    return f"{message.strip().rstrip('.')} ({error_type})."


def describe(err: BaseException) -> str | None:
    """A message a shell user can act on, or None for errors that are bugs."""
    from kvbox.client import ApiError, KvboxClientError, TransportError  # httpx loads only when used

    if isinstance(err, KvboxError):
        return _typed(err.message, err.type)
    if isinstance(err, ApiError):
        text = _typed(err.message, err.type or f"HTTP {err.status}")
        if err.status == 401:
            text += " Check --token or KVBOX_TOKEN."
        return text
    if isinstance(err, TransportError):
        return f"Could not reach the server at {err.url}: {err}"
    if isinstance(err, KvboxClientError):
        return str(err)
    if isinstance(err, OSError):
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{err.strerror or err}"
    return None


def run(options: TargetOptions, action: Callable[[Target], Awaitable[T]]) -> T:
    """Open the target, run one action, close it; server and backend errors exit with code 1."""

    async def go() -> T:
        target = await open_target(options)
        try:
            return await action(target)
        finally:
            await target.close()

    try:
        return asyncio.run(go())
    except (click.ClickException, click.Abort):
        raise
    except Exception as err:
        text = describe(err)
        if text is None:
            raise  # a bug: let the traceback show it
        raise DataError(text) from err


def record_failure(err: BaseException, what: str) -> BaseException:
    """The error of one record of many, saying which; bugs pass through untouched."""
    text = describe(err)
    return DataError(f"{what}: {text}") if text is not None else err
