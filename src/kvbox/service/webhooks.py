"""Webhook use cases: create, list, read, update and delete a store's webhooks (MANAGE), and
read a webhook's delivery log; the check that a webhook calls no internal address."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import socket
from typing import Any
from urllib.parse import urlsplit

from kvbox.backends.base import MetadataIndex
from kvbox.core.clock import Clock
from kvbox.core.errors import ChangesDisabledError, InvalidValueError, StoreNotFoundError, WebhookNotFoundError
from kvbox.core.feed import EVENT_TYPES
from kvbox.core.ids import new_id
from kvbox.core.models import Permission
from kvbox.core.webhooks import (
    ATTEMPTS_KEPT,
    MAX_WEBHOOKS_PER_STORE,
    Attempt,
    Webhook,
    check_event_types,
    check_prefix,
    check_secret,
    check_url,
    is_public,
)
from kvbox.service.principal import Principal
from kvbox.service.stores import Resolved, StoreService

RESOLVE_TIMEOUT_S = 5.0


async def ensure_public(url: str) -> None:
    """Refuse (`InvalidValueError`) a URL whose host is or resolves to an address that is not
    public: loopback, private, link-local and the like (every address it resolves to counts)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S
        )
    except (OSError, TimeoutError, UnicodeError):
        raise InvalidValueError(f"Invalid value provided: requestUrl host {host!r} does not resolve.") from None
    addresses = {str(info[4][0]) for info in found}
    if not addresses or not all(is_public(a) for a in addresses):
        raise InvalidValueError(
            f"Invalid value provided: requestUrl host {host!r} is an internal address "
            "(the server allows those only with KVBOX_WEBHOOK_ALLOW_PRIVATE=true)."
        )


def _boolean(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidValueError(f"Invalid value provided: {name} must be true or false.")
    return value


class WebhookService:
    def __init__(
        self, index: MetadataIndex, stores: StoreService, clock: Clock, *, enabled: bool, allow_private: bool
    ) -> None:
        self._index = index
        self._stores = stores
        self._clock = clock
        self.enabled = enabled
        self.allow_private = allow_private

    async def _resolve(self, principal: Principal, segment: str) -> Resolved:
        if not self.enabled:
            raise ChangesDisabledError()
        return await self._stores.resolve(principal, segment, need=Permission.MANAGE)

    async def _destination(self, url: object) -> str:
        checked = check_url(url)
        if not self.allow_private:
            await ensure_public(checked)
        return checked

    async def create(self, principal: Principal, segment: str, body: dict[str, Any]) -> tuple[Webhook, str | None]:
        """A new webhook from its API fields; returns it and the secret kvbox generated for it
        (None when the caller gave one)."""
        resolved = await self._resolve(principal, segment)
        if "requestUrl" not in body:
            raise InvalidValueError("Invalid value provided: requestUrl is required.")
        store_id = resolved.store.id
        if len(await self._index.list_webhooks(store_id)) >= MAX_WEBHOOKS_PER_STORE:
            raise InvalidValueError(f"Invalid value provided: a store has at most {MAX_WEBHOOKS_PER_STORE} webhooks.")
        generated = None if body.get("secret") is not None else secrets.token_urlsafe(32)
        now = self._clock.now_ms()
        webhook = Webhook(
            id=new_id(),
            store_id=store_id,
            request_url=await self._destination(body["requestUrl"]),
            event_types=check_event_types(body["eventTypes"]) if body.get("eventTypes") is not None else EVENT_TYPES,
            key_prefix=check_prefix(body["keyPrefix"]) if body.get("keyPrefix") is not None else "",
            is_enabled=_boolean(body["isEnabled"], "isEnabled") if body.get("isEnabled") is not None else True,
            secret=generated or check_secret(body["secret"]),
            created_at=now,
            modified_at=now,
        )
        created = await self._index.insert_webhook(webhook)
        if created is None:
            raise StoreNotFoundError()
        return created, generated

    async def list_all(self, principal: Principal, segment: str) -> list[Webhook]:
        resolved = await self._resolve(principal, segment)
        return await self._index.list_webhooks(resolved.store.id)

    async def get(self, principal: Principal, segment: str, webhook_id: str) -> Webhook:
        resolved = await self._resolve(principal, segment)
        found = await self._index.get_webhook(resolved.store.id, webhook_id)
        if found is None:
            raise WebhookNotFoundError()
        return found

    async def update(self, principal: Principal, segment: str, webhook_id: str, body: dict[str, Any]) -> Webhook:
        """Change the fields `body` names (null leaves a field as it is)."""
        resolved = await self._resolve(principal, segment)
        changes: dict[str, Any] = {"modified_at": self._clock.now_ms()}
        if body.get("requestUrl") is not None:
            changes["request_url"] = await self._destination(body["requestUrl"])
        if body.get("eventTypes") is not None:
            changes["event_types"] = check_event_types(body["eventTypes"])
        if body.get("keyPrefix") is not None:
            changes["key_prefix"] = check_prefix(body["keyPrefix"])
        if body.get("isEnabled") is not None:
            changes["is_enabled"] = _boolean(body["isEnabled"], "isEnabled")
        if body.get("secret") is not None:
            changes["secret"] = check_secret(body["secret"])
        updated = await self._index.update_webhook(
            resolved.store.id, webhook_id, lambda w: dataclasses.replace(w, **changes)
        )
        if updated is None:
            raise WebhookNotFoundError()
        return updated

    async def delete(self, principal: Principal, segment: str, webhook_id: str) -> None:
        resolved = await self._resolve(principal, segment)
        if not await self._index.delete_webhook(resolved.store.id, webhook_id):
            raise WebhookNotFoundError()

    async def deliveries(self, principal: Principal, segment: str, webhook_id: str) -> list[Attempt]:
        """The webhook's pending deliveries and last attempts, newest first (at most 100)."""
        webhook = await self.get(principal, segment, webhook_id)
        return await self._index.list_attempts(webhook.id, limit=ATTEMPTS_KEPT)
