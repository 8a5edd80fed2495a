"""Changes, webhooks and delivery attempts as the CLI prints them: the API's JSON shapes, made
the same way from a server's answers (`remote.py`) and from the services (`local.py`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from kvbox.client import Change, DeliveryAttempt, Webhook
from kvbox.core.clock import iso_ms
from kvbox.core.feed import Change as LoggedChange
from kvbox.core.webhooks import Attempt
from kvbox.core.webhooks import Webhook as StoredWebhook


def _iso(value: datetime | None) -> str | None:
    return None if value is None else iso_ms(int(value.timestamp() * 1000))


def change_json(c: Change | LoggedChange) -> dict[str, Any]:
    etag: str | None
    created: str | None
    if isinstance(c, LoggedChange):
        etag = f'"{c.etag}"' if c.etag is not None else None
        created = iso_ms(c.created_at)
    else:
        etag, created = c.etag, _iso(c.created_at)
    return {"sequence": c.sequence, "eventType": c.event_type, "key": c.key, "etag": etag, "size": c.size,
            "contentType": c.content_type, "createdAt": created}  # fmt: skip


def webhook_json(w: Webhook | StoredWebhook, secret: str | None = None) -> dict[str, Any]:
    created: str | None
    modified: str | None
    if isinstance(w, StoredWebhook):
        created, modified = iso_ms(w.created_at), iso_ms(w.modified_at)
    else:
        created, modified, secret = _iso(w.created_at), _iso(w.modified_at), w.secret
    out = {"id": w.id, "requestUrl": w.request_url, "eventTypes": list(w.event_types), "keyPrefix": w.key_prefix,
           "isEnabled": w.is_enabled, "createdAt": created, "modifiedAt": modified}  # fmt: skip
    if secret is not None:
        out["secret"] = secret
    return out


def attempt_json(a: DeliveryAttempt | Attempt) -> dict[str, Any]:
    created: str | None
    if isinstance(a, Attempt):
        duration, created = a.duration_ms, iso_ms(a.created_at)
    else:
        duration, created = a.duration_millis, _iso(a.created_at)
    return {"deliveryId": a.delivery_id, "sequence": a.sequence, "eventType": a.event_type, "attempt": a.attempt,
            "status": a.status, "responseStatus": a.response_status, "durationMillis": duration,
            "error": a.error, "createdAt": created}  # fmt: skip
