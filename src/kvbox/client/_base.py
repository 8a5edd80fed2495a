"""What the sync and async clients share: URLs, the retry policy, request specs, response parsing.

Every operation is described once as a `Call` (method, path, query, body) and its response
is parsed once here; `_sync.py` and `_async.py` only send calls and sleep between attempts.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from kvbox.client._body import Body, encode_body
from kvbox.client._compression import Compression
from kvbox.client._errors import InvalidResponseBodyError
from kvbox.client.models import ExpiryRule, Record, RecordStream, StoreInfo
from kvbox.core import urls
from kvbox.core.clock import SystemClock
from kvbox.core.content import BINARY_TYPE, decode_value
from kvbox.core.ranges import parse_content_range, range_header
from kvbox.core.sentinels import Unset
from kvbox.core.signatures import sign_record, sign_storage

DEFAULT_API_URL = "http://127.0.0.1:8790"
USER_AGENT = "kvbox-client/0.1 (python)"


def api_root(url: str) -> str:
    """`http://host:8790`, `http://host:8790/` and `http://host:8790/v2` all give `http://host:8790`."""
    return url.strip().rstrip("/").removesuffix("/v2").rstrip("/")


def store_path(id_or_name: str) -> str:
    """The path of a store; `username/name` is sent as `username~name`, as the official client does."""
    return urls.store_path(id_or_name.replace("/", "~"))


def record_path(store: str, key: str) -> str:
    """The path of a record under a store path from `store_path`."""
    # One path segment, whatever the key holds: the server decodes it after splitting the path.
    return f"{store}/records/{urls.key_segment(key)}"


# A watch long-polls this long per request, and waits this long after a failed one.
WATCH_WAIT_S = 30
WATCH_RECONNECT_S = 1.0


def webhook_path(store: str, webhook_id: str) -> str:
    return f"{store}/webhooks/{quote(webhook_id, safe='')}"


def query(**params: Any) -> dict[str, str]:
    """Query parameters without the unset ones; booleans as `true`/`false` like the official client."""
    out: dict[str, str] = {}
    for name, value in params.items():
        if value is None:
            continue
        out[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter for 429, 5xx and connection errors.

    Attempt n waits `min_delay * 2**(n-1)`, times a random factor in [1, 2), capped at
    `max_delay`; a 429's `Retry-After` is honoured when it asks for longer.
    """

    max_retries: int = 8
    min_delay: float = 0.5
    max_delay: float = 60.0

    def delay(self, attempt: int, *, retry_after: float | None = None, rand: float | None = None) -> float:
        factor = 1.0 + (random.random() if rand is None else rand)
        wait = min(self.max_delay, self.min_delay * (2.0 ** (attempt - 1)) * factor)
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_delay))
        return wait


def is_retryable_status(status: int) -> bool:
    return status == 429 or status >= 500


# Failures after which the request was certainly not processed.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def may_retry_status(call: Call, status: int) -> bool:
    """Whether to send the call again after this status. A conditional write is sent again only
    when it was certainly not applied (429): after a 5xx it may have been, and a second
    attempt would then fail its own condition."""
    return status == 429 or (status >= 500 and call.idempotent)


def may_retry_transport(call: Call, error: httpx.TransportError) -> bool:
    """Whether to send the call again after a connection failure (see `may_retry_status`)."""
    return call.idempotent or isinstance(error, _NOT_SENT)


def retry_after(response: httpx.Response) -> float | None:
    """Seconds from a `Retry-After` header (delta seconds or an HTTP date), if any."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, float(when.timestamp()) - SystemClock().now_ms() / 1000)


@dataclass(slots=True)
class Call:
    """One API request as data. `allow_404` makes a 404 a result (None) instead of an error.
    `idempotent`: sending it twice does what sending it once does (not so for a conditional
    write, see `may_retry_status`)."""

    method: str
    path: str
    params: dict[str, str] | None = None
    body: Body | None = None
    allow_404: bool = False
    stream: bool = False
    headers: dict[str, str] = field(default_factory=dict)
    idempotent: bool = True


def condition_headers(if_match: str | None, if_none_match: str | None) -> dict[str, str]:
    """`If-Match` / `If-None-Match` for a conditional write; an ETag may be given with or
    without its quotes."""
    headers: dict[str, str] = {}
    if if_match is not None:
        headers["if-match"] = _quoted(if_match)
    if if_none_match is not None:
        headers["if-none-match"] = _quoted(if_none_match)
    return headers


def _quoted(etag: str) -> str:
    etag = etag.strip()
    if etag == "*" or etag.startswith(('"', 'W/"')) or "," in etag:
        return etag
    return f'"{etag}"'


def range_headers(offset: int, length: int | None) -> dict[str, str]:
    """The headers asking for `length` bytes (None: all) of a record's content from `offset`.

    Offsets count the record as `get_record_as_bytes` gives it (a negative one counts from
    the end): the server is asked not to send a compressed record compressed, and sends only
    the range when it stores the record uncompressed (otherwise the stream cuts it out, see
    `RecordStream`)."""
    if length is not None and (length < 1 or offset < 0):
        raise ValueError("length must be 1 or more, and a negative offset (the last bytes) takes no length")
    if offset == 0 and length is None:
        return {}
    return {"range": range_header(offset, length), "accept-encoding": "identity"}


def record_stream(key: str, response: httpx.Response, offset: int, length: int | None) -> RecordStream:
    """The stream of a record GET that asked for `offset` and `length` (see `range_headers`)."""
    ctype = response.headers.get("content-type", "")
    if response.status_code != 206:  # the whole record: skip to the range here
        return RecordStream(key, ctype, response, offset, length, skip=offset)
    found = parse_content_range(response.headers.get("content-range"))
    expected = found is not None and (found[0].start == offset if offset >= 0 else found[0].end == found[1])
    if found is None or not expected:
        raise InvalidResponseBodyError(f"A range of {key!r} came back as {response.headers.get('content-range')!r}")
    return RecordStream(key, ctype, response, offset, length)


def json_call(method: str, path: str, payload: Any, compression: Compression | None, **kwargs: Any) -> Call:
    """A call with a JSON body, compressed by the same rule as record bodies."""
    return Call(method, path, body=encode_body(payload, "application/json", None, compression), **kwargs)


def data_of(response: httpx.Response) -> Any:
    """The `data` of an API envelope."""
    try:
        return response.json()["data"]
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidResponseBodyError(f"Expected a JSON {{'data': ...}} envelope from {response.url}") from err


def update_payload(
    name: str | Unset | None,
    general_access: str | None,
    record_expiry: Sequence[ExpiryRule | dict[str, Any]] | None = None,
) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if not isinstance(name, Unset):
        payload["name"] = name
    if general_access is not None:
        payload["generalAccess"] = general_access
    if record_expiry is not None:
        payload["recordExpiry"] = [r.to_api() if isinstance(r, ExpiryRule) else dict(r) for r in record_expiry]
    return payload


Seconds = int | float | timedelta


def expiry_params(expires_in: Seconds | None, expires_at: datetime | None) -> dict[str, str]:
    """The query of a record write that expires (kvbox extension): `expires_in` seconds (or a
    timedelta) from now, rounded up to whole seconds, or the instant `expires_at` (a naive
    datetime is taken as UTC)."""
    if expires_in is not None and expires_at is not None:
        raise ValueError("Give expires_in or expires_at, not both.")
    if expires_in is not None:
        seconds = expires_in.total_seconds() if isinstance(expires_in, timedelta) else float(expires_in)
        if not seconds > 0:
            raise ValueError(f"expires_in must be positive, not {expires_in!r}.")
        return {"expiresIn": str(math.ceil(seconds))}
    if expires_at is not None:
        when = expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)
        return {"expiresAt": when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")}
    return {}


def deleted_count(data: Any) -> int:
    """`deletedCount` of a delete by prefix."""
    try:
        return int(data["deletedCount"])
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidResponseBodyError("Expected {'data': {'deletedCount': N}} from a delete by prefix") from err


def record_from(key: str, response: httpx.Response, *, parse: bool) -> Record:
    """A record from a GET response: parsed by content type when `parse`, raw bytes otherwise."""
    ctype = response.headers.get("content-type") or BINARY_TYPE
    etag = response.headers.get("etag")
    if response.status_code == 204:
        return Record(key, None, ctype, etag)
    if not parse:
        return Record(key, response.content, ctype, etag)
    try:
        value = decode_value(response.content, ctype)
    except (ValueError, LookupError) as err:
        raise InvalidResponseBodyError(f"Record {key!r} is not valid {ctype}: {err}") from err
    return Record(key, value, ctype, etag)


def record_public_url(public_root: str, store: StoreInfo, key: str) -> str:
    """A record's URL, signed when the store's signing secret is known (callers who may write)."""
    secret = store.url_signing_secret_key
    return urls.record_url(public_root, store.id, key, signature=sign_record(secret, key) if secret else None)


def keys_public_url(
    public_root: str,
    store: StoreInfo,
    *,
    limit: int | None,
    exclusive_start_key: str | None,
    prefix: str | None,
    collection: str | None,
    expires_in: timedelta | None,
) -> str:
    """A key-listing URL with a storage signature (expiring after `expires_in`, or never)."""
    params = query(limit=limit, exclusiveStartKey=exclusive_start_key, prefix=prefix, collection=collection)
    if store.url_signing_secret_key:
        expires = 0 if expires_in is None else SystemClock().now_ms() + int(expires_in.total_seconds() * 1000)
        params["signature"] = sign_storage(store.url_signing_secret_key, store.id, expires_at_ms=expires)
    url = f"{public_root}{store_path(store.id)}/keys"
    return f"{url}?{urlencode(params)}" if params else url


def client_headers(token: str | None, extra: dict[str, str] | None) -> dict[str, str]:
    headers = {"user-agent": USER_AGENT, "accept": "application/json, */*"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    headers.update(extra or {})
    return headers


def timeout_of(seconds: float) -> httpx.Timeout:
    # Connecting should be quick; reading a large record may legitimately take a while.
    return httpx.Timeout(seconds, connect=min(seconds, 10.0))
