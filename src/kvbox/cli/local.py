"""The local target: a kvbox data directory opened in this process, acting as one user.

Every operation is the service call the API makes for the same request, with a Principal
for the chosen user, so permissions, validation and limits are the server's own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import click

from kvbox.cli.feedrows import attempt_json, change_json, webhook_json
from kvbox.cli.options import settings_from
from kvbox.cli.target import KeyRow, RecordInfo, Source, StoreRow
from kvbox.core.clock import iso_ms
from kvbox.core.conditions import write_condition
from kvbox.core.encoding import IDENTITY
from kvbox.core.errors import RecordNotFoundError, StoreNotFoundError
from kvbox.core.expiry import expires_at
from kvbox.core.models import ExpiryRule, RecordMeta, User
from kvbox.core.ranges import aslice_chunks, range_header
from kvbox.service.codecs import decode_stream
from kvbox.service.container import Services, build_services
from kvbox.service.principal import Principal
from kvbox.service.records import PLAIN_READ, ReadOptions, RecordRead
from kvbox.service.stores import MAX_PAGE, Resolved

CHUNK_SIZE = 256 * 1024
WATCH_S = 30  # each wait for changes, as a remote watch long-polls
DEFAULT_USER = "admin"


async def choose_user(services: Services, wanted: str | None, data_dir: Path) -> User:
    """The user named by --user, else the only user, else `admin`."""
    users = await services.users.list_users()
    if wanted is not None:
        for user in users:
            if wanted in (user.username, user.id):
                return user
        names = ", ".join(u.username for u in users) or "none yet"
        raise click.BadParameter(f"No user {wanted!r} in {data_dir} (users: {names}).", param_hint="--user")
    if not users:
        raise click.ClickException(
            f"{data_dir} has no users yet. Create one with `kvbox users create NAME --data-dir {data_dir}`."
        )
    if len(users) == 1:
        return users[0]
    for user in users:
        if user.username == DEFAULT_USER:
            return user
    names = ", ".join(u.username for u in users)
    raise click.UsageError(f"{data_dir} has several users ({names}); choose one with --user or KVBOX_USER.")


def _info(meta: RecordMeta, size: int | None) -> RecordInfo:
    return RecordInfo(meta.key, meta.content_type, size, meta.encoding, f'"{meta.etag}"')


class LocalDownload:
    """A record's stored bytes, decompressed on the way out when it was stored compressed; a
    range read of a record stored compressed is cut from its decompressed content."""

    def __init__(self, read: RecordRead, offset: int, length: int | None) -> None:
        meta = read.meta
        ranged = offset != 0 or length is not None
        self._cut = (offset, length) if ranged and read.span is None else None
        size = meta.size if not ranged else (read.span.length if read.span is not None else None)
        self.info = _info(meta, size)
        self._body = read.body
        self._read = 0

    @property
    def transferred(self) -> int:
        return self._read

    async def _stored(self) -> AsyncIterator[bytes]:
        if self._body is None:
            return
        async for chunk in self._body:
            self._read += len(chunk)
            yield chunk

    def chunks(self) -> AsyncIterator[bytes]:
        content = (
            self._stored() if self.info.encoding == IDENTITY else decode_stream(self._stored(), self.info.encoding)
        )
        return content if self._cut is None else aslice_chunks(content, *self._cut)

    async def aclose(self) -> None:
        if self._body is not None:
            await self._body.aclose()


async def _file_chunks(source: Source) -> AsyncIterator[bytes]:
    while chunk := source.read(CHUNK_SIZE):
        yield chunk


class LocalTarget:
    def __init__(self, services: Services, principal: Principal, where: str) -> None:
        self._svc = services
        self._who = principal
        self.where = where

    @classmethod
    async def open(cls, data_dir: str | None, user: str | None) -> LocalTarget:
        settings = settings_from({"data_dir": data_dir})
        if settings.backend == "memory":
            raise click.UsageError("The memory backend keeps nothing between commands; use sqlite.")
        if not settings.data_dir.is_dir():
            raise click.UsageError(
                f"No kvbox data directory at {settings.data_dir}. Pass --data-dir (or KVBOX_DATA_DIR), "
                "or --api-url (or KVBOX_API_URL) for a server."
            )
        try:
            services = build_services(settings)
        except ValueError as err:  # e.g. an unknown KVBOX_BACKEND
            raise click.UsageError(str(err)) from err
        try:
            found = await choose_user(services, user, settings.data_dir)
        except BaseException:
            await services.close()
            raise
        where = f"data directory {settings.data_dir} (as user {found.username})"
        return cls(services, Principal(user=found), where)

    def _row(self, resolved: Resolved) -> StoreRow:
        store = resolved.store
        expires = self._svc.retention.expires_at(store)
        return StoreRow(
            id=store.id,
            name=store.name,
            user_id=store.user_id,
            username=resolved.owner.username if resolved.owner else None,
            created_at=iso_ms(store.created_at),
            modified_at=iso_ms(store.modified_at),
            accessed_at=iso_ms(store.accessed_at),
            general_access=store.general_access.value,
            record_count=store.record_count,
            storage_bytes=store.stats.storage_bytes,
            expires_at=iso_ms(expires) if expires is not None else None,
            record_expiry=tuple((r.prefix, r.expire_after_secs) for r in sorted(store.record_expiry.rules,
                                                                                 key=lambda r: r.prefix)),
        )  # fmt: skip

    async def get_store(self, segment: str) -> StoreRow | None:
        try:
            return self._row(await self._svc.stores.get(self._who, segment))
        except StoreNotFoundError:
            return None

    async def list_stores(self, *, unnamed: bool) -> list[StoreRow]:
        rows: list[StoreRow] = []
        while True:
            page = await self._svc.stores.list(self._who, offset=len(rows), limit=MAX_PAGE, unnamed=unnamed)
            rows += [self._row(r) for r in page.items]
            if not page.items or len(rows) >= page.total:
                return rows

    async def create_store(self, name: str | None) -> tuple[StoreRow, bool]:
        resolved, created = await self._svc.stores.get_or_create(self._who, name=name)
        return self._row(resolved), created

    async def rename_store(self, store_id: str, name: str) -> StoreRow:
        return self._row(await self._svc.stores.update(self._who, store_id, name=name))

    async def delete_store(self, store_id: str) -> None:
        await self._svc.stores.delete(self._who, store_id)

    async def set_record_expiry(self, store_id: str, rules: list[tuple[str, int]]) -> StoreRow:
        wanted = tuple(ExpiryRule(prefix, seconds) for prefix, seconds in rules)
        return self._row(await self._svc.stores.update(self._who, store_id, record_expiry=wanted))

    async def iterate_keys(self, store_id: str, *, prefix: str | None = None) -> AsyncIterator[KeyRow]:
        after: str | None = None
        while True:
            resolved, page = await self._svc.records.list_keys(
                self._who, store_id, exclusive_start_key=after, limit=MAX_PAGE, prefix=prefix
            )
            expiry = resolved.store.record_expiry
            for item in page.items:
                expires = expires_at(expiry, item.key, item.modified_at, item.expires_at)
                yield KeyRow(item.key, item.size, item.content_type, iso_ms(item.modified_at), f'"{item.etag}"',
                             iso_ms(expires) if expires is not None else None)  # fmt: skip
            if page.next_key is None:
                return
            after = page.next_key

    async def record_info(self, store_id: str, key: str) -> RecordInfo | None:
        try:
            meta = (await self._svc.records.head(self._who, store_id, key)).meta
        except RecordNotFoundError:
            return None
        return _info(meta, meta.size)

    @asynccontextmanager
    async def open_record(
        self, store_id: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[LocalDownload | None]:
        # Only a record stored uncompressed is ranged in place (the service decodes the others).
        ranged = offset != 0 or length is not None
        options = ReadOptions(range=range_header(offset, length)) if ranged else PLAIN_READ
        try:
            read = await self._svc.records.get(self._who, store_id, key, options=options)
        except RecordNotFoundError:
            yield None
            return
        download = LocalDownload(read, offset, length)
        try:
            yield download
        finally:
            await download.aclose()

    async def put_record(
        self,
        store_id: str,
        key: str,
        source: Source,
        *,
        content_type: str,
        size: int | None,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> str | None:
        _, meta = await self._svc.records.put(
            self._who,
            store_id,
            key,
            body=_file_chunks(source),
            content_type=content_type,
            content_encoding=None,
            content_length=size,
            condition=write_condition(if_match, "*" if if_absent else None),
        )
        return f'"{meta.etag}"'

    async def delete_record(self, store_id: str, key: str) -> None:
        await self._svc.records.delete(self._who, store_id, key)

    async def delete_prefix(self, store_id: str, prefix: str) -> int:
        return await self._svc.records.delete_prefix(self._who, store_id, prefix)

    async def watch(self, store_id: str, *, prefix: str | None, after: int) -> AsyncIterator[dict[str, Any]]:
        resolved = await self._svc.changes.resolve(self._who, store_id)
        while True:
            items, after = await self._svc.changes.read(resolved.store, after=after, limit=MAX_PAGE, wait_s=WATCH_S)
            for change in items:
                if prefix is None or change.key.startswith(prefix):
                    yield change_json(change)

    async def add_webhook(
        self, store_id: str, url: str, *, event_types: list[str] | None, prefix: str | None, secret: str | None
    ) -> dict[str, Any]:
        body = {"requestUrl": url, "eventTypes": event_types, "keyPrefix": prefix, "secret": secret}
        webhook, made = await self._svc.webhooks.create(self._who, store_id, body)
        return webhook_json(webhook, made)

    async def list_webhooks(self, store_id: str) -> list[dict[str, Any]]:
        return [webhook_json(w) for w in await self._svc.webhooks.list_all(self._who, store_id)]

    async def delete_webhook(self, store_id: str, webhook_id: str) -> None:
        await self._svc.webhooks.delete(self._who, store_id, webhook_id)

    async def webhook_deliveries(self, store_id: str, webhook_id: str) -> list[dict[str, Any]]:
        return [attempt_json(a) for a in await self._svc.webhooks.deliveries(self._who, store_id, webhook_id)]

    async def close(self) -> None:
        await self._svc.close()
