"""The remote target: a kvbox (or Apify API v2) server, through `kvbox.client`.

Uploads go through the synchronous client in a thread. When a server refuses a write before
reading its body (403, 413) and closes the connection, httpx's async client usually reports
a ReadError instead of the refusal (encode/httpx#878); the sync client reads the response.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from kvbox.cli.target import KeyRow, RecordInfo, Source, StoreRow
from kvbox.client import ExpiryRule, KeyItem, KvboxClient, KvboxClientAsync, RecordStream, StoreInfo
from kvbox.core.content import BINARY_TYPE, is_json_type, is_text_type
from kvbox.core.encoding import IDENTITY

# A command line gives up sooner than a long-running program: about 4-8 s of retries for a
# server that is down, while a 429's Retry-After is still honoured up to MAX_DELAY.
RETRIES = 4
MIN_DELAY = 0.25
MAX_DELAY = 10.0
TIMEOUT = 120.0

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
    )


class RemoteDownload:
    """A record streaming from the server; httpx undoes a passed-through content encoding."""

    def __init__(self, stream: RecordStream) -> None:
        self.info = _info(stream)
        self._stream = stream

    @property
    def transferred(self) -> int:
        return self._stream.response.num_bytes_downloaded

    def chunks(self) -> AsyncIterator[bytes]:
        return self._stream.aiter_bytes()


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
    async def open_record(self, store_id: str, key: str) -> AsyncIterator[RemoteDownload | None]:
        async with self._client.key_value_store(store_id).stream_record(key) as stream:
            yield None if stream is None else RemoteDownload(stream)

    async def put_record(self, store_id: str, key: str, source: Source, *, content_type: str, size: int | None) -> None:
        del size  # the client measures files itself and streams pipes chunked
        # Text and JSON shrink a lot; other bytes (octet-stream included) are sent as they are:
        # files are often compressed already, and gzip would cost time to gain little or nothing.
        textual = is_text_type(content_type) or is_json_type(content_type)
        store = (self._uploads if textual else self._raw_uploads).key_value_store(store_id)

        def upload() -> None:
            with self._lock:
                self._running += 1
            try:
                store.set_record(key, source, content_type)
            finally:
                with self._lock:
                    self._running -= 1

        await in_daemon_thread(upload)

    async def delete_record(self, store_id: str, key: str) -> None:
        await self._client.key_value_store(store_id).delete_record(key)

    async def delete_prefix(self, store_id: str, prefix: str) -> int:
        return await self._client.key_value_store(store_id).delete_prefix(prefix)

    async def close(self) -> None:
        with self._lock:
            idle = self._running == 0
        if idle:  # closing under a running upload would wait for it; after Ctrl-C the process just exits
            self._uploads.close()
            self._raw_uploads.close()
        await self._client.aclose()
