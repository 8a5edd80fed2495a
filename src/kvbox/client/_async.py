"""The asynchronous client: `KvboxClientAsync`, the twin of `KvboxClient` (same calls, same parsing)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta
from typing import Any, BinaryIO
from urllib.parse import quote

import anyio
import anyio.to_thread
import httpx

from kvbox.client import _base as base
from kvbox.client._base import Call, RetryPolicy, Seconds
from kvbox.client._body import aprepare_body
from kvbox.client._compression import Compression
from kvbox.client._errors import NotFoundError, ServerError, TransportError, api_error
from kvbox.client.models import (
    ExpiryRule,
    Grant,
    KeyItem,
    KeyList,
    Record,
    RecordStream,
    StoreInfo,
    StoreList,
    UserInfo,
)
from kvbox.client.webhooks import Change, ChangeList, DeliveryAttempt, Webhook, webhook_payload
from kvbox.core.content import BINARY_TYPE
from kvbox.core.errors import StoreNotFoundError
from kvbox.core.sentinels import UNSET, Unset


class KvboxClientAsync:
    """A client for the key-value-store endpoints of a kvbox (or Apify) API v2 server.

    Retries 429, 5xx and connection errors with exponential backoff and jitter, compresses
    request bodies of 1 KiB or more, and streams large uploads and downloads.
    """

    def __init__(
        self,
        token: str | None = None,
        *,
        api_url: str = base.DEFAULT_API_URL,
        public_url: str | None = None,
        max_retries: int = 8,
        min_delay_between_retries: float = 0.5,
        max_delay_between_retries: float = 60.0,
        timeout: float = 60.0,
        compression: Compression | None = "gzip",
        headers: dict[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.api_url = base.api_root(api_url)
        self.public_url = base.api_root(public_url or api_url)
        self.retry = RetryPolicy(max_retries, min_delay_between_retries, max_delay_between_retries)
        self.compression: Compression | None = compression
        self._http = httpx.AsyncClient(
            base_url=self.api_url,
            headers=base.client_headers(token, headers),
            timeout=base.timeout_of(timeout),
            transport=transport,
            follow_redirects=True,
        )

    def key_value_stores(self) -> StoreCollectionClientAsync:
        return StoreCollectionClientAsync(self)

    def key_value_store(self, id_or_name: str) -> StoreClientAsync:
        """A store by ID, `~name` (the caller's store) or `username/name`."""
        return StoreClientAsync(self, id_or_name)

    async def me(self) -> UserInfo:
        """The caller's account."""
        return UserInfo.from_api(await self.send_data(Call("GET", "/v2/users/me")))

    async def update_me(self, *, default_general_access: str) -> UserInfo:
        """Change the general access that new stores of the caller follow by default."""
        payload = {"defaultGeneralAccess": default_general_access}
        return UserInfo.from_api(await self.send_data(base.json_call("PUT", "/v2/users/me", payload, self.compression)))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> KvboxClientAsync:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def send(self, call: Call) -> httpx.Response | None:
        """Send a call with retries. Returns the response (open when `call.stream`), or None
        for an allowed 404; raises `ApiError` or `TransportError` otherwise."""
        attempt = 0
        while True:
            attempt += 1
            can_retry = attempt <= self.retry.max_retries and (call.body is None or call.body.replayable)
            headers = {**(call.body.headers if call.body else {}), **call.headers}
            content = call.body.content() if call.body else None
            request = self._http.build_request(
                call.method, call.path, params=call.params, headers=headers, content=content
            )
            try:
                response = await self._http.send(request, stream=True)
                status = response.status_code
                if status < 300 and call.stream:
                    return response
                await response.aread()
            except httpx.TransportError as err:
                if not (can_retry and base.may_retry_transport(call, err)):
                    raise TransportError(
                        str(err) or type(err).__name__, method=call.method, url=str(request.url), attempt=attempt
                    ) from err
                await anyio.sleep(self.retry.delay(attempt))
                continue
            await response.aclose()
            if status < 300:
                return response
            if status == 404 and call.allow_404:
                return None
            if can_retry and base.may_retry_status(call, status):
                await anyio.sleep(self.retry.delay(attempt, retry_after=base.retry_after(response)))
                continue
            raise api_error(response, attempt=attempt)

    async def send_data(self, call: Call) -> Any:
        response = await self.send(call)
        return None if response is None else base.data_of(response)


class StoreCollectionClientAsync:
    """`/v2/key-value-stores`: list the caller's stores, get or create one."""

    def __init__(self, client: KvboxClientAsync) -> None:
        self._client = client

    async def list(
        self,
        *,
        unnamed: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        desc: bool | None = None,
        ownership: str | None = None,
    ) -> StoreList:
        params = base.query(unnamed=unnamed, limit=limit, offset=offset, desc=desc, ownership=ownership)
        return StoreList.from_api(await self._client.send_data(Call("GET", "/v2/key-value-stores", params)))

    async def iterate(
        self,
        *,
        unnamed: bool | None = None,
        limit: int | None = None,
        offset: int | None = None,
        desc: bool | None = None,
        ownership: str | None = None,
        chunk_size: int = 1000,
    ) -> AsyncIterator[StoreInfo]:
        """Every matching store, page by page (`limit` caps the total)."""
        offset = offset or 0
        while limit is None or limit > 0:
            page_size = chunk_size if limit is None else min(chunk_size, limit)
            page = await self.list(unnamed=unnamed, limit=page_size, offset=offset, desc=desc, ownership=ownership)
            for item in page.items:
                yield item
            offset += len(page.items)
            limit = None if limit is None else limit - len(page.items)
            if not page.items or offset >= page.total:
                return

    async def get_or_create(self, name: str | None = None, *, schema: dict[str, Any] | None = None) -> StoreInfo:
        """The caller's store called `name`, created if missing; a new unnamed store without a name."""
        payload = {"schema": schema} if schema is not None else {}
        call = base.json_call(
            "POST", "/v2/key-value-stores", payload, self._client.compression, params=base.query(name=name)
        )
        return StoreInfo.from_api(await self._client.send_data(call))


class StoreClientAsync:
    """One store: its metadata, keys and records."""

    def __init__(self, client: KvboxClientAsync, id_or_name: str) -> None:
        self._client = client
        self.path = base.store_path(id_or_name)

    async def get(self) -> StoreInfo | None:
        data = await self._client.send_data(Call("GET", self.path, allow_404=True))
        return None if data is None else StoreInfo.from_api(data)

    async def update(
        self,
        *,
        name: str | Unset | None = UNSET,
        general_access: str | None = None,
        record_expiry: Sequence[ExpiryRule | dict[str, Any]] | None = None,
    ) -> StoreInfo:
        """Rename (`name=None` makes the store unnamed), change its general access, or replace
        its record expiry rules (kvbox extension; `[]` removes them all)."""
        payload = base.update_payload(name, general_access, record_expiry)
        call = base.json_call("PUT", self.path, payload, self._client.compression)
        return StoreInfo.from_api(await self._client.send_data(call))

    async def delete(self) -> None:
        """Delete the store; a store that is already gone is not an error."""
        await self._client.send(Call("DELETE", self.path, allow_404=True))

    async def list_keys(
        self,
        *,
        limit: int | None = None,
        exclusive_start_key: str | None = None,
        prefix: str | None = None,
        collection: str | None = None,
        signature: str | None = None,
    ) -> KeyList:
        params = base.query(
            limit=limit,
            exclusiveStartKey=exclusive_start_key,
            prefix=prefix,
            collection=collection,
            signature=signature,
        )
        return KeyList.from_api(await self._client.send_data(Call("GET", f"{self.path}/keys", params)))

    async def iterate_keys(
        self,
        *,
        limit: int | None = None,
        exclusive_start_key: str | None = None,
        prefix: str | None = None,
        collection: str | None = None,
        signature: str | None = None,
        chunk_size: int = 1000,
    ) -> AsyncIterator[KeyItem]:
        """Every key after `exclusive_start_key` in order, following the cursor (`limit` caps the total)."""
        cursor = exclusive_start_key
        while limit is None or limit > 0:
            page_size = chunk_size if limit is None else min(chunk_size, limit)
            page = await self.list_keys(
                limit=page_size, exclusive_start_key=cursor, prefix=prefix, collection=collection, signature=signature
            )
            for item in page.items:
                yield item
            limit = None if limit is None else limit - len(page.items)
            if not page.is_truncated or not page.next_exclusive_start_key or not page.items:
                return
            cursor = page.next_exclusive_start_key

    async def _get(
        self, key: str, signature: str | None, *, stream: bool = False, headers: dict[str, str] | None = None
    ) -> httpx.Response | None:
        params = base.query(attachment=True, signature=signature)
        call = Call("GET", base.record_path(self.path, key), params, allow_404=True, stream=stream)
        call.headers.update(headers or {})
        return await self._client.send(call)

    async def get_record(self, key: str, *, signature: str | None = None) -> Record | None:
        """The record, its value parsed: JSON to dicts/lists, text to str, anything else bytes."""
        response = await self._get(key, signature)
        return None if response is None else base.record_from(key, response, parse=True)

    async def get_record_as_bytes(self, key: str, *, signature: str | None = None) -> Record | None:
        response = await self._get(key, signature)
        return None if response is None else base.record_from(key, response, parse=False)

    @contextlib.asynccontextmanager
    async def stream_record(
        self, key: str, *, signature: str | None = None, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[RecordStream | None]:
        """`async with store.stream_record(key) as rec:` gives the record to read in chunks, or None.

        With `offset` (and `length`), only that part of the record's content: a range read,
        which a resumed download uses; a negative `offset` reads the last `-offset` bytes.
        `RangeNotSatisfiableError` when `offset` is at or past the end; `rec.etag` tells which
        version is being read.
        """
        headers = base.range_headers(offset, length)
        response = await self._get(key, signature, stream=True, headers=headers)
        if response is None:
            yield None
            return
        try:
            yield base.record_stream(key, response, offset, length)
        finally:
            await response.aclose()

    async def get_record_range(
        self, key: str, offset: int, length: int | None = None, *, signature: str | None = None
    ) -> Record | None:
        """`length` bytes (None: all) of the record's content from `offset` (negative: the last
        `-offset` bytes), as bytes: the server sends only those when it stores the record
        uncompressed. None when the record does not exist; `RangeNotSatisfiableError` when
        `offset` is at or past its end."""
        async with self.stream_record(key, signature=signature, offset=offset, length=length) as stream:
            if stream is None:
                return None
            data = bytearray()
            async for chunk in stream.aiter_bytes():
                data += chunk
            return Record(key, bytes(data), stream.content_type or BINARY_TYPE, stream.etag)

    async def record_exists(self, key: str) -> bool:
        return await self._client.send(Call("HEAD", base.record_path(self.path, key), allow_404=True)) is not None

    async def set_record(
        self,
        key: str,
        value: Any,
        content_type: str | None = None,
        *,
        content_encoding: str | None = None,
        if_match: str | None = None,
        if_none_match: str | None = None,
        expires_in: Seconds | None = None,
        expires_at: datetime | None = None,
    ) -> str | None:
        """Store a value, a path, a binary file or an iterator of bytes (the last three are
        streamed); returns the new record's ETag.

        Without a content type: bytes and streams are `application/octet-stream`, str is
        text, anything else JSON. `content_encoding` declares bytes that are already encoded.
        `if_match=etag` writes only over that version (`"*"`: over any), `if_none_match="*"`
        only when the record does not exist; otherwise `PreconditionFailedError` and nothing
        changes. A conditional write is retried only when it was certainly not applied.
        `expires_in` (seconds or a timedelta) or `expires_at` make the record expire (kvbox
        extension); without either it has no expiry of its own.
        """
        params = base.expiry_params(expires_in, expires_at)
        body = await aprepare_body(value, content_type, content_encoding, self._client.compression)
        conditions = base.condition_headers(if_match, if_none_match)
        path = base.record_path(self.path, key)
        call = Call("PUT", path, params or None, body=body, headers=conditions, idempotent=not conditions)
        response = await self._client.send(call)
        return None if response is None else response.headers.get("etag")

    async def delete_record(self, key: str, *, if_match: str | None = None) -> None:
        """Delete the record (a missing one is not an error); with `if_match`, only that version
        (`"*"`: any), else `PreconditionFailedError`."""
        conditions = base.condition_headers(if_match, None)
        await self._client.send(
            Call("DELETE", base.record_path(self.path, key), headers=conditions, idempotent=not conditions)
        )

    async def delete_prefix(self, prefix: str) -> int:
        """Delete every record whose key starts with `prefix` ("" for all) in one request, and
        return how many there were (kvbox extension)."""
        call = Call("DELETE", f"{self.path}/records", {"prefix": prefix})
        return base.deleted_count(await self._client.send_data(call))

    async def list_grants(self) -> list[Grant]:
        """The users the store is shared with (kvbox extension; needs MANAGE)."""
        data = await self._client.send_data(Call("GET", f"{self.path}/grants"))
        return [Grant.from_api(item) for item in data.get("items", [])]

    async def share(self, user: str, permission: str = "READ") -> Grant:
        """Share the store with a user (name or ID): `READ`, `WRITE` or `MANAGE`."""
        path = f"{self.path}/grants/{quote(user, safe='')}"
        call = base.json_call("PUT", path, {"permission": permission}, self._client.compression)
        return Grant.from_api(await self._client.send_data(call))

    async def unshare(self, user: str) -> None:
        """Stop sharing the store with a user; `NotFoundError` when it was not shared with them."""
        await self._client.send(Call("DELETE", f"{self.path}/grants/{quote(user, safe='')}"))

    async def list_changes(self, *, after: int = 0, limit: int | None = None, wait: int | None = None) -> ChangeList:
        """The store's changes after the sequence `after` (kvbox extension); with `wait`
        (seconds, up to 60) the call waits that long for a first change."""
        params = base.query(after=after, limit=limit, wait=wait)
        return ChangeList.from_api(await self._client.send_data(Call("GET", f"{self.path}/changes", params)))

    async def watch(
        self, *, prefix: str | None = None, after: int = 0, wait: int = base.WATCH_WAIT_S
    ) -> AsyncIterator[Change]:
        """Every change after `after` (of keys starting with `prefix`) as it happens, forever:
        long-polls and picks up where it was after a lost connection or a server restart."""
        while True:
            try:
                page = await self.list_changes(after=after, wait=wait)
            except (TransportError, ServerError):
                await anyio.sleep(base.WATCH_RECONNECT_S)
                continue
            for change in page.items:
                if prefix is None or change.key.startswith(prefix):
                    yield change
            after = page.last_sequence

    async def create_webhook(
        self,
        request_url: str,
        *,
        event_types: list[str] | None = None,
        key_prefix: str | None = None,
        is_enabled: bool | None = None,
        secret: str | None = None,
    ) -> Webhook:
        """A webhook POSTing each matching change to `request_url` (kvbox extension; needs
        MANAGE). Without `secret`, kvbox makes one and returns it (only) here."""
        payload = webhook_payload(request_url, event_types, key_prefix, is_enabled, secret)
        call = base.json_call("POST", f"{self.path}/webhooks", payload, self._client.compression)
        return Webhook.from_api(await self._client.send_data(call))

    async def list_webhooks(self) -> list[Webhook]:
        data = await self._client.send_data(Call("GET", f"{self.path}/webhooks"))
        return [Webhook.from_api(item) for item in data.get("items", [])]

    async def get_webhook(self, webhook_id: str) -> Webhook | None:
        data = await self._client.send_data(Call("GET", base.webhook_path(self.path, webhook_id), allow_404=True))
        return None if data is None else Webhook.from_api(data)

    async def update_webhook(
        self,
        webhook_id: str,
        *,
        request_url: str | None = None,
        event_types: list[str] | None = None,
        key_prefix: str | None = None,
        is_enabled: bool | None = None,
        secret: str | None = None,
    ) -> Webhook:
        """Change the fields given (None leaves a field as it is)."""
        payload = webhook_payload(request_url, event_types, key_prefix, is_enabled, secret)
        call = base.json_call("PUT", base.webhook_path(self.path, webhook_id), payload, self._client.compression)
        return Webhook.from_api(await self._client.send_data(call))

    async def delete_webhook(self, webhook_id: str) -> None:
        await self._client.send(Call("DELETE", base.webhook_path(self.path, webhook_id)))

    async def list_webhook_deliveries(self, webhook_id: str) -> list[DeliveryAttempt]:
        """The webhook's pending deliveries and last 100 attempts, newest first."""
        data = await self._client.send_data(Call("GET", base.webhook_path(self.path, webhook_id) + "/deliveries"))
        return [DeliveryAttempt.from_api(item) for item in data.get("items", [])]

    async def _info(self) -> StoreInfo:
        info = await self.get()
        if info is None:
            raise NotFoundError(
                "Key-value store was not found",
                status=404,
                type=StoreNotFoundError.type,
                method="GET",
                url=self._client.api_url + self.path,
            )
        return info

    async def get_record_public_url(self, key: str) -> str:
        """A permanent URL for one record, signed when the caller may write the store."""
        return base.record_public_url(self._client.public_url, await self._info(), key)

    async def create_keys_public_url(
        self,
        *,
        limit: int | None = None,
        exclusive_start_key: str | None = None,
        prefix: str | None = None,
        collection: str | None = None,
        expires_in: timedelta | None = None,
    ) -> str:
        """A signed key-listing URL that anyone can open, expiring after `expires_in` (or never)."""
        return base.keys_public_url(
            self._client.public_url,
            await self._info(),
            limit=limit,
            exclusive_start_key=exclusive_start_key,
            prefix=prefix,
            collection=collection,
            expires_in=expires_in,
        )

    async def download_zip(
        self,
        destination: str | os.PathLike[str] | BinaryIO,
        *,
        prefix: str | None = None,
        collection: str | None = None,
        signature: str | None = None,
    ) -> int:
        """Stream every record (or those matching `prefix`/`collection`) as one ZIP; returns its size."""
        params = base.query(prefix=prefix, collection=collection, signature=signature)
        response = await self._client.send(Call("GET", f"{self.path}/records", params, stream=True))
        assert response is not None
        written = 0
        # File writes go to a worker thread: a slow disk must not stall the event loop.
        out: BinaryIO
        if isinstance(destination, str | os.PathLike):
            path = destination
            out = await anyio.to_thread.run_sync(lambda: open(path, "wb"))  # noqa: SIM115 - closed below
            owned = True
        else:
            out, owned = destination, False
        try:
            async for chunk in response.aiter_bytes(64 * 1024):
                await anyio.to_thread.run_sync(out.write, chunk)
                written += len(chunk)
        finally:
            await response.aclose()
            if owned:
                out.close()
        return written
