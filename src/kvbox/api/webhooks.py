"""Webhook endpoints: list and create a store's webhooks, get, update and delete one, and
read its delivery log (all MANAGE)."""

from __future__ import annotations

from typing import Any

from kvbox.api.http import Request, Send, send_empty, send_json
from kvbox.api.stores import read_json_object
from kvbox.core.clock import iso_ms
from kvbox.core.webhooks import Attempt, Webhook
from kvbox.service.container import Services
from kvbox.service.principal import Principal


def webhook_view(webhook: Webhook) -> dict[str, Any]:
    """A webhook as the API shows it: never its secret."""
    return {
        "id": webhook.id,
        "requestUrl": webhook.request_url,
        "eventTypes": list(webhook.event_types),
        "keyPrefix": webhook.key_prefix,
        "isEnabled": webhook.is_enabled,
        "createdAt": iso_ms(webhook.created_at),
        "modifiedAt": iso_ms(webhook.modified_at),
    }


def attempt_view(attempt: Attempt) -> dict[str, Any]:
    return {
        "deliveryId": attempt.delivery_id,
        "sequence": attempt.sequence,
        "eventType": attempt.event_type,
        "attempt": attempt.attempt,
        "status": attempt.status,
        "responseStatus": attempt.response_status,
        "durationMillis": attempt.duration_ms,
        "error": attempt.error,
        "createdAt": iso_ms(attempt.created_at),
    }


async def list_webhooks(req: Request, send: Send, svc: Services, who: Principal, segment: str) -> None:
    webhooks = await svc.webhooks.list_all(who, segment)
    await send_json(send, 200, {"data": {"items": [webhook_view(w) for w in webhooks]}})


async def create_webhook(req: Request, send: Send, svc: Services, who: Principal, segment: str) -> None:
    body = await read_json_object(req)
    webhook, secret = await svc.webhooks.create(who, segment, body)
    view = webhook_view(webhook)
    if secret is not None:
        view["secret"] = secret  # generated: shown this once
    await send_json(send, 201, {"data": view})


async def get_webhook(req: Request, send: Send, svc: Services, who: Principal, segment: str, webhook_id: str) -> None:
    await send_json(send, 200, {"data": webhook_view(await svc.webhooks.get(who, segment, webhook_id))})


async def update_webhook(
    req: Request, send: Send, svc: Services, who: Principal, segment: str, webhook_id: str
) -> None:
    body = await read_json_object(req)
    await send_json(send, 200, {"data": webhook_view(await svc.webhooks.update(who, segment, webhook_id, body))})


async def delete_webhook(
    req: Request, send: Send, svc: Services, who: Principal, segment: str, webhook_id: str
) -> None:
    await svc.webhooks.delete(who, segment, webhook_id)
    await send_empty(send, 204)


async def list_deliveries(
    req: Request, send: Send, svc: Services, who: Principal, segment: str, webhook_id: str
) -> None:
    attempts = await svc.webhooks.deliveries(who, segment, webhook_id)
    await send_json(send, 200, {"data": {"items": [attempt_view(a) for a in attempts]}})
