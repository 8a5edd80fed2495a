"""Webhooks' domain: a store's webhook, a delivery of one change to it and each attempt at
it, the `Kvbox-Signature` scheme, and which addresses a webhook may call.

The wire contract is extensions.md section 5: the signature is
`t=UNIX_SECONDS,v1=HEX` where HEX is HMAC-SHA256 keyed with the secret's UTF-8 bytes over
`t + "." + raw body`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from kvbox.core.errors import InvalidValueError
from kvbox.core.feed import EVENT_TYPES
from kvbox.core.frozen import fast_init

MAX_URL_LENGTH = 2048
MAX_WEBHOOKS_PER_STORE = 20
MIN_SECRET_LENGTH = 8
MAX_SECRET_LENGTH = 256
MAX_PREFIX_LENGTH = 256
# A delivery is retried for at least this long after its first attempt, then given up.
GIVE_UP_AFTER_MS = 25 * 3_600_000
MAX_RETRY_DELAY_MS = 3_600_000
# A receiver answers within this, or the attempt failed.
ATTEMPT_TIMEOUT_S = 30.0
# Attempts kept per webhook for its delivery log.
ATTEMPTS_KEPT = 100


class DeliveryStatus(StrEnum):
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    PENDING = "PENDING"


@fast_init
@dataclass(frozen=True, slots=True)
class Webhook:
    """A store's webhook. `cursor` is the last change sequence already turned into deliveries
    (or skipped as not matching)."""

    id: str
    store_id: str
    request_url: str
    event_types: tuple[str, ...]
    key_prefix: str
    is_enabled: bool
    secret: str
    created_at: int
    modified_at: int
    cursor: int = 0

    def matches(self, event_type: str, key: str) -> bool:
        return event_type in self.event_types and key.startswith(self.key_prefix)


@fast_init
@dataclass(frozen=True, slots=True)
class Delivery:
    """One change to be delivered to one webhook, persisted before its first attempt. `body`
    is the exact JSON sent on every attempt; `attempts` counts the attempts made so far."""

    id: str
    webhook_id: str
    sequence: int
    event_type: str
    body: bytes
    created_at: int
    next_attempt_at: int
    attempts: int = 0


@fast_init
@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at a delivery, as the delivery log shows it (PENDING: not made yet)."""

    delivery_id: str
    webhook_id: str
    sequence: int
    event_type: str
    attempt: int
    status: str
    response_status: int | None
    duration_ms: int | None
    error: str | None
    created_at: int


def pending_attempt(d: Delivery) -> Attempt:
    """A pending delivery as a row of the delivery log: the attempt it waits for, due at
    its `createdAt`."""
    return Attempt(d.id, d.webhook_id, d.sequence, d.event_type, d.attempts + 1, DeliveryStatus.PENDING,
                   None, None, None, d.next_attempt_at)  # fmt: skip


def retry_delay_ms(attempts: int, first_ms: int) -> int:
    """The wait before the next attempt after `attempts` failed ones: `first_ms`, then doubling,
    at most an hour."""
    return int(min(first_ms * 2 ** min(max(attempts - 1, 0), 32), MAX_RETRY_DELAY_MS))


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Kvbox-Signature` header value of `body` sent at `timestamp` (Unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, *, now_s: int, tolerance_s: int = 300) -> bool:
    """Whether `header` (a `Kvbox-Signature` value) signs `body` with `secret`, made at most
    `tolerance_s` from `now_s` (0: any age)."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts.get("t", [""])[0])
    except ValueError:
        return False
    if tolerance_s and abs(now_s - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    return any(hmac.compare_digest(expected, given) for given in parts.get("v1", []))


def check_url(url: object) -> str:
    """A webhook's `requestUrl`: an absolute http or https URL with a host."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise InvalidValueError(
            f"Invalid value provided: requestUrl must be a URL of at most {MAX_URL_LENGTH} characters."
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise InvalidValueError("Invalid value provided: requestUrl is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c in url for c in " \r\n\t"):
        raise InvalidValueError("Invalid value provided: requestUrl must be an http or https URL with a host.")
    del port
    return url


def is_public(address: str) -> bool:
    """Whether an IP address is a public one a webhook may call without
    KVBOX_WEBHOOK_ALLOW_PRIVATE (not loopback, private, link-local, multicast, reserved or
    unspecified; IPv4-mapped IPv6 addresses are judged as the IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_event_types(value: object) -> tuple[str, ...]:
    """`eventTypes`: a non-empty list of the feed's event types, without repeats."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise InvalidValueError("Invalid value provided: eventTypes must be a non-empty list of event types.")
    unknown = [v for v in value if v not in EVENT_TYPES]
    if unknown:
        raise InvalidValueError(
            f"Invalid value provided: unknown event type {unknown[0]!r} (use {', '.join(EVENT_TYPES)})."
        )
    return tuple(dict.fromkeys(value))


def check_prefix(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_PREFIX_LENGTH or "\x00" in value:
        raise InvalidValueError(
            f"Invalid value provided: keyPrefix must be a string of at most {MAX_PREFIX_LENGTH} characters."
        )
    return value


def check_secret(value: object) -> str:
    if not isinstance(value, str) or not MIN_SECRET_LENGTH <= len(value) <= MAX_SECRET_LENGTH or "\x00" in value:
        raise InvalidValueError(
            f"Invalid value provided: secret must be a string of {MIN_SECRET_LENGTH} to {MAX_SECRET_LENGTH} characters."
        )
    return value
