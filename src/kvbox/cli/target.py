"""Where the data commands act: a kvbox server over HTTP, or a data directory in this process.

Both targets offer the same operations (`Target`), so a command never knows which one it
has. Remote mode goes through `kvbox.client`; local mode opens the data directory with
`build_services` and acts as one user, with the same service calls and permission checks
as the API (see `cli/local.py`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import click
from click.core import ParameterSource

from kvbox.cli.options import setting_option
from kvbox.core.errors import KvboxError
from kvbox.core.ids import looks_like_id

T = TypeVar("T")

TARGET_HELP = (
    "Without --api-url the command works in this process on the data directory (--data-dir), "
    "as the user named by --user (default: the only user, or admin), with the same permission "
    "checks as the API. With --api-url it talks to that server as the owner of --token."
)


@dataclass(frozen=True, slots=True)
class StoreRow:
    """A store as the data commands show it; the same fields in both modes."""

    id: str
    name: str | None
    user_id: str | None
    username: str | None
    created_at: str | None
    modified_at: str | None
    accessed_at: str | None
    general_access: str | None
    record_count: int | None
    storage_bytes: int | None
    expires_at: str | None

    @property
    def label(self) -> str:
        """How messages name the store."""
        return f"{self.name} ({self.id})" if self.name else f"{self.id} (unnamed)"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "userId": self.user_id,
            "username": self.username,
            "createdAt": self.created_at,
            "modifiedAt": self.modified_at,
            "accessedAt": self.accessed_at,
            "generalAccess": self.general_access,
            "recordCount": self.record_count,
            "storageBytes": self.storage_bytes,
            "expiresAt": self.expires_at,
        }


@dataclass(frozen=True, slots=True)
class KeyRow:
    key: str
    size: int


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """A record's metadata. `size` is the stored size (compressed, for a record stored compressed)."""

    key: str
    content_type: str
    size: int | None
    encoding: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "contentType": self.content_type, "size": self.size, "encoding": self.encoding}


class Source(Protocol):
    """What an upload reads: a binary file, stdin, or a wrapper counting what was read."""

    def read(self, size: int = -1, /) -> bytes: ...


class Download(Protocol):
    """A record being read: `chunks()` gives its content; `transferred` counts stored bytes read so far."""

    info: RecordInfo

    @property
    def transferred(self) -> int: ...

    def chunks(self) -> AsyncIterator[bytes]: ...


class Target(Protocol):
    """The operations of the data commands. A missing store or record is None, other failures raise."""

    where: str

    async def get_store(self, segment: str) -> StoreRow | None: ...
    async def list_stores(self, *, unnamed: bool) -> list[StoreRow]: ...
    async def create_store(self, name: str | None) -> tuple[StoreRow, bool]: ...
    async def rename_store(self, store_id: str, name: str) -> StoreRow: ...
    async def delete_store(self, store_id: str) -> None: ...
    def iterate_keys(self, store_id: str, *, prefix: str | None = None) -> AsyncIterator[KeyRow]: ...
    async def record_info(self, store_id: str, key: str) -> RecordInfo | None: ...
    def open_record(self, store_id: str, key: str) -> AbstractAsyncContextManager[Download | None]: ...
    async def put_record(
        self, store_id: str, key: str, source: Source, *, content_type: str, size: int | None
    ) -> None: ...
    async def delete_record(self, store_id: str, key: str) -> None: ...
    async def close(self) -> None: ...


class DataError(click.ClickException):
    """A failure reported by the server or the backend: exit code 1, message on stderr."""

    exit_code = 1


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
    if options.api_url is not None:
        from kvbox.cli.remote import RemoteTarget

        return RemoteTarget.connect(options.api_url, options.token)
    from kvbox.cli.local import LocalTarget

    return await LocalTarget.open(options.data_dir, options.user)


def _typed(message: str, error_type: str) -> str:
    """`Record was not found (record-not-found).`: the message, then the Apify error type."""
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


async def find_store(target: Target, ref: str) -> StoreRow | None:
    """A store by ID, by name (the caller's store) or as `owner~name`; None when there is none."""
    if "~" in ref:
        return await target.get_store(ref)
    segments = [ref, "~" + ref] if looks_like_id(ref) else ["~" + ref]
    for segment in segments:
        found = await target.get_store(segment)
        if found is not None:
            return found
    return None


async def resolve_store(target: Target, ref: str) -> StoreRow:
    """Like `find_store`, but a missing store is an error naming it."""
    found = await find_store(target, ref)
    if found is None:
        raise DataError(
            f'Key-value store "{ref}" was not found (record-not-found) on {target.where}. '
            "`kvbox stores ls` lists the stores you can use."
        )
    return found
