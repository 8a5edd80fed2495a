"""The remote target: a kvbox (or Apify API v2) server, through `kvbox.client`.

Uploads go through the synchronous client in a thread. When a server refuses a write before
reading its body (403, 413) and closes the connection, httpx's async client usually reports
a ReadError instead of the refusal (encode/httpx#878); the sync client reads the response.
Downloads that lose their connection go on where they broke, with a range read pinned to
the version being read (its ETag), instead of starting over.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

import httpx

from kvbox.cli.feedrows import attempt_json, change_json, webhook_json
from kvbox.cli.target import KeyRow, RecordChangedError, RecordInfo, Source, StoreRow
from kvbox.client import ExpiryRule, KeyItem, KvboxClient, KvboxClientAsync, RecordStream, StoreClientAsync, StoreInfo
from kvbox.core.content import BINARY_TYPE, is_json_type, is_text_type
from kvbox.core.encoding import IDENTITY
from kvbox.core.ranges import parse_content_range

# A command line gives up sooner than a long-running program: about 4-8 s of retries for a
# server that is down, while a 429's Retry-After is still honoured up to MAX_DELAY.
RETRIES = 4
MIN_DELAY = 0.25
MAX_DELAY = 10.0
TIMEOUT = 120.0
# A download goes on after this many lost connections at most (each resumption is a request
# the client itself retries with backoff while the server is unreachable).
RESUMES = 5

T = TypeVar("T")


async def in_daemon_thread(call: Callable[[], T]) -> T:
    """Run a blocking call in a daemon thread, so that Ctrl-C never waits for an upload to end."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():
            return  # cancelled meanwhile
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = call(), None
        except BaseException as err:
            result, error = None, err
        with contextlib.suppress(RuntimeError):  # the loop is gone: the command was interrupted
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="kvbox-upload", daemon=True).start()
    return await done


def _row(info: StoreInfo) -> StoreRow:
    raw: dict[str, Any] = info.raw
    stats = raw.get("stats") or {}
    record_count = raw.get("recordCount")
    storage = stats.get("storageBytes")
    return StoreRow(
        id=info.id,
        name=info.name,
        user_id=info.user_id,
        username=info.username,
        created_at=raw.get("createdAt"),
        modified_at=raw.get("modifiedAt"),
        accessed_at=raw.get("accessedAt"),
        general_access=info.general_access,
        record_count=int(record_count) if isinstance(record_count, int) else None,
        storage_bytes=int(storage) if isinstance(storage, int) else None,
        expires_at=raw.get("expiresAt"),
        record_expiry=tuple((r.prefix, r.expire_after_secs) for r in info.record_expiry),
    )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _key_row(item: KeyItem) -> KeyRow:
    return KeyRow(item.key, item.size, item.content_type, _iso(item.modified_at), item.etag, _iso(item.expires_at))


def _info(stream: RecordStream) -> RecordInfo:
    headers = stream.response.headers
    return RecordInfo(
        key=stream.key,
        content_type=headers.get("content-type") or BINARY_TYPE,
        size=stream.size,
        encoding=headers.get("content-encoding") or IDENTITY,
        etag=stream.etag,
    )


class RemoteDownload:
    """A record streaming from the server; httpx undoes a passed-through content encoding.

    When the connection drops, the rest is asked for as a range of the same version; offsets
    count the content as it is given out, so a record sent compressed resumes too (the
    server then sends it decoded, and the client skips to the offset)."""

    def __init__(self, store: StoreClientAsync, stream: RecordStream, stack: AsyncExitStack) -> None:
        self.info = _info(stream)
        self._store = store
        self._stream = stream
        self._stack = stack
        self._earlier = 0  # stored bytes read by connections that dropped
        self._offset = _absolute_offset(stream)

    @property
    def transferred(self) -> int:
        return self._earlier + self._stream.response.num_bytes_downloaded

    async def chunks(self) -> AsyncIterator[bytes]:
        given = 0
        for resumes in range(RESUMES + 1):
            try:
                async for chunk in self._stream.aiter_bytes():
                    given += len(chunk)
                    yield chunk
                return
            except httpx.TransportError:
                if resumes == RESUMES or self._offset is None or not self.info.etag:
                    raise
            await self._resume(given)

    async def _resume(self, given: int) -> None:
        """Go on from `given` bytes into the download, from the same version of the record."""
        assert self._offset is not None
        self._earlier += self._stream.response.num_bytes_downloaded
        await self._stream.response.aclose()
        length = None if self._stream.length is None else self._stream.length - given
        opened = self._store.stream_record(self.info.key, offset=self._offset + given, length=length)
        stream = await self._stack.enter_async_context(opened)
        if stream is None or stream.etag != self.info.etag:
            raise RecordChangedError(self.info.key)
        self._stream = stream


def _absolute_offset(stream: RecordStream) -> int | None:
    """Where the download starts in the record; None when that is not known (the last bytes of
    a record sent whole), and then a lost connection cannot be resumed."""
    if stream.offset >= 0:
        return stream.offset
    found = parse_content_range(stream.response.headers.get("content-range"))
    return found[0].start if found is not None else None


class RemoteTarget:
    def __init__(self, client: KvboxClientAsync, uploads: KvboxClient, raw_uploads: KvboxClient) -> None:
        self._client = client
        self._uploads = uploads
        self._raw_uploads = raw_uploads
        self._running = 0  # uploads whose thread has not returned yet
        self._lock = threading.Lock()
        self.where = client.api_url

    @classmethod
    def connect(cls, api_url: str, token: str | None) -> RemoteTarget:
        settings: dict[str, Any] = {
            "api_url": api_url,
            "max_retries": RETRIES,
            "min_delay_between_retries": MIN_DELAY,
            "max_delay_between_retries": MAX_DELAY,
            "timeout": TIMEOUT,
        }
        return cls(
            KvboxClientAsync(token, **settings),
            KvboxClient(token, **settings),
            KvboxClient(token, compression=None, **settings),
        )

    async def get_store(self, segment: str) -> StoreRow | None:
        info = await self._client.key_value_store(segment).get()
        return None if info is None else _row(info)

    async def list_stores(self, *, unnamed: bool) -> list[StoreRow]:
        return [_row(info) async for info in self._client.key_value_stores().iterate(unnamed=unnamed)]

    async def create_store(self, name: str | None) -> tuple[StoreRow, bool]:
        # The API's get-or-create answers 200 or 201; the client hides which, so look first.
        existing = await self.get_store("~" + name) if name else None
        if existing is not None:
            return existing, False
        return _row(await self._client.key_value_stores().get_or_create(name)), True

    async def rename_store(self, store_id: str, name: str) -> StoreRow:
        return _row(await self._client.key_value_store(store_id).update(name=name))

    async def delete_store(self, store_id: str) -> None:
        await self._client.key_value_store(store_id).delete()

    async def set_record_expiry(self, store_id: str, rules: list[tuple[str, int]]) -> StoreRow:
        wanted = [ExpiryRule(prefix, seconds) for prefix, seconds in rules]
        return _row(await self._client.key_value_store(store_id).update(record_expiry=wanted))

    async def iterate_keys(self, store_id: str, *, prefix: str | None = None) -> AsyncIterator[KeyRow]:
        async for item in self._client.key_value_store(store_id).iterate_keys(prefix=prefix):
            yield _key_row(item)

    async def record_info(self, store_id: str, key: str) -> RecordInfo | None:
        # The headers of a GET, body left unread: the client's HEAD only says whether it exists.
        async with self._client.key_value_store(store_id).stream_record(key) as stream:
            return None if stream is None else _info(stream)

    @asynccontextmanager
    async def open_record(
        self, store_id: str, key: str, *, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[RemoteDownload | None]:
        store = self._client.key_value_store(store_id)
        async with AsyncExitStack() as stack:
            stream = await stack.enter_async_context(store.stream_record(key, offset=offset, length=length))
            yield None if stream is None else RemoteDownload(store, stream, stack)

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
        del size  # the client measures files itself and streams pipes chunked
        # Text and JSON shrink a lot; other bytes (octet-stream included) are sent as they are:
        # files are often compressed already, and gzip would cost time to gain little or nothing.
        textual = is_text_type(content_type) or is_json_type(content_type)
        store = (self._uploads if textual else self._raw_uploads).key_value_store(store_id)

        def upload() -> str | None:
            with self._lock:
                self._running += 1
            try:
                return store.set_record(
                    key, source, content_type, if_match=if_match, if_none_match="*" if if_absent else None
                )
            finally:
                with self._lock:
                    self._running -= 1

        return await in_daemon_thread(upload)

    async def delete_record(self, store_id: str, key: str) -> None:
        await self._client.key_value_store(store_id).delete_record(key)

    async def delete_prefix(self, store_id: str, prefix: str) -> int:
        return await self._client.key_value_store(store_id).delete_prefix(prefix)

    async def watch(self, store_id: str, *, prefix: str | None, after: int) -> AsyncIterator[dict[str, Any]]:
        async for change in self._client.key_value_store(store_id).watch(prefix=prefix, after=after):
            yield change_json(change)

    async def add_webhook(
        self, store_id: str, url: str, *, event_types: list[str] | None, prefix: str | None, secret: str | None
    ) -> dict[str, Any]:
        store = self._client.key_value_store(store_id)
        return webhook_json(await store.create_webhook(url, event_types=event_types, key_prefix=prefix, secret=secret))

    async def list_webhooks(self, store_id: str) -> list[dict[str, Any]]:
        return [webhook_json(w) for w in await self._client.key_value_store(store_id).list_webhooks()]

    async def delete_webhook(self, store_id: str, webhook_id: str) -> None:
        await self._client.key_value_store(store_id).delete_webhook(webhook_id)

    async def webhook_deliveries(self, store_id: str, webhook_id: str) -> list[dict[str, Any]]:
        attempts = await self._client.key_value_store(store_id).list_webhook_deliveries(webhook_id)
        return [attempt_json(a) for a in attempts]

    async def close(self) -> None:
        with self._lock:
            idle = self._running == 0
        if idle:  # closing under a running upload would wait for it; after Ctrl-C the process just exits
            self._uploads.close()
            self._raw_uploads.close()
        await self._client.aclose()
