"""kvbox extensions: sharing a store with users, and the caller's account settings.

Same envelopes as the Apify endpoints: `{"data": ...}` and `{"error": {"type", "message"}}`.
"""

from __future__ import annotations

from typing import Any

from kvbox.api.http import Request, Send, send_empty, send_json
from kvbox.api.stores import read_json_object
from kvbox.core.clock import iso_ms
from kvbox.core.errors import TokenNotProvidedError, UserNotFoundError
from kvbox.core.models import User
from kvbox.service.container import Services
from kvbox.service.principal import Principal
from kvbox.service.sharing import GrantView


def grant_view(view: GrantView) -> dict[str, Any]:
    return {
        "userId": view.user.id,
        "username": view.user.username,
        "permission": view.grant.permission.name,
        "createdAt": iso_ms(view.grant.created_at),
    }


def user_view(user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "username": user.username,
        "createdAt": iso_ms(user.created_at),
        "defaultGeneralAccess": user.default_general_access.value,
    }


async def list_grants(req: Request, send: Send, svc: Services, who: Principal, segment: str) -> None:
    views = await svc.sharing.list(who, segment)
    items = [grant_view(v) for v in views]
    await send_json(send, 200, {"data": {"total": len(items), "count": len(items), "items": items}})


async def put_grant(req: Request, send: Send, svc: Services, who: Principal, segment: str, user: str) -> None:
    body = await read_json_object(req)
    view = await svc.sharing.grant(who, segment, user, body.get("permission"))
    await send_json(send, 200, {"data": grant_view(view)})


async def delete_grant(req: Request, send: Send, svc: Services, who: Principal, segment: str, user: str) -> None:
    if not await svc.sharing.revoke(who, segment, user):
        raise UserNotFoundError(f"The store is not shared with {user!r}.")
    await send_empty(send, 204)


async def get_me(req: Request, send: Send, svc: Services, who: Principal) -> None:
    if who.user is None:
        raise TokenNotProvidedError()
    user = await svc.stores.users.fresh(who.user.id)
    await send_json(send, 200, {"data": user_view(user or who.user)})


async def update_me(req: Request, send: Send, svc: Services, who: Principal) -> None:
    body = await read_json_object(req)
    user = await svc.sharing.set_default_access(who, body.get("defaultGeneralAccess"))
    await send_json(send, 200, {"data": user_view(user)})
