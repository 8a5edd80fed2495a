"""The change feed's and webhooks' shapes in the client (kvbox extensions), and the check a
Python webhook receiver makes of each delivery's signature."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kvbox.client.models import parse_time
from kvbox.core.webhooks import verify


@dataclass(frozen=True, slots=True)
class Change:
    """One committed record change; the record fields are those after it (None for deletions)."""

    sequence: int
    event_type: str
    key: str
    etag: str | None
    size: int | None
    content_type: str | None
    created_at: datetime | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Change:
        return cls(int(data["sequence"]), data["eventType"], data["key"], data.get("etag"), data.get("size"),
                   data.get("contentType"), parse_time(data.get("createdAt")))  # fmt: skip


@dataclass(frozen=True, slots=True)
class ChangeList:
    """A page of changes and the cursor to pass as `after` next."""

    items: list[Change]
    last_sequence: int

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> ChangeList:
        return cls([Change.from_api(c) for c in data.get("items", [])], int(data["lastSequence"]))


@dataclass(frozen=True, slots=True)
class Webhook:
    """A store's webhook. `secret` is set only in the answer that created it, when kvbox made it."""

    id: str
    request_url: str
    event_types: list[str]
    key_prefix: str
    is_enabled: bool
    created_at: datetime | None
    modified_at: datetime | None
    secret: str | None = None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Webhook:
        return cls(data["id"], data["requestUrl"], list(data.get("eventTypes", [])), data.get("keyPrefix", ""),
                   bool(data.get("isEnabled", True)), parse_time(data.get("createdAt")),
                   parse_time(data.get("modifiedAt")), data.get("secret"))  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    """One attempt of a webhook delivery (status PENDING: a delivery waiting for this attempt)."""

    delivery_id: str
    sequence: int
    event_type: str
    attempt: int
    status: str
    response_status: int | None
    duration_millis: int | None
    error: str | None
    created_at: datetime | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> DeliveryAttempt:
        return cls(data["deliveryId"], int(data["sequence"]), data["eventType"], int(data["attempt"]), data["status"],
                   data.get("responseStatus"), data.get("durationMillis"), data.get("error"),
                   parse_time(data.get("createdAt")))  # fmt: skip


def webhook_payload(
    request_url: str | None,
    event_types: list[str] | None,
    key_prefix: str | None,
    is_enabled: bool | None,
    secret: str | None,
) -> dict[str, Any]:
    """The fields of a webhook create or update body that were given."""
    given = {"requestUrl": request_url, "eventTypes": event_types, "keyPrefix": key_prefix,
             "isEnabled": is_enabled, "secret": secret}  # fmt: skip
    return {name: value for name, value in given.items() if value is not None}


def verify_signature(secret: str, signature: str, body: bytes, *, tolerance_s: int = 300) -> bool:
    """Whether a delivery is genuine: `signature` is its `Kvbox-Signature` header, `body` the
    raw request body (as received, before any JSON parsing), `secret` the webhook's secret.
    Deliveries signed more than `tolerance_s` seconds from now are refused (0: any age), which
    stops a recorded delivery being replayed later."""
    return verify(secret, signature, body, now_s=int(time.time()), tolerance_s=tolerance_s)
