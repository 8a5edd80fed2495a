"""Store endpoints: list, get-or-create, get, update, delete."""

from __future__ import annotations

from typing import Any

from kvbox.api.envelopes import public_base, store_view
from kvbox.api.http import Request, Send, send_empty, send_json
from kvbox.core.encoding import normalize_encoding
from kvbox.core.errors import InvalidRequestError, InvalidValueError
from kvbox.core.expiry import parse_rules
from kvbox.core.parsing import load_json
from kvbox.core.sentinels import UNSET
from kvbox.core.urls import store_path
from kvbox.service.codecs import decode_bytes
from kvbox.service.container import Services
from kvbox.service.principal import Principal
from kvbox.service.stores import MAX_PAGE, Resolved

JSON_BODY_LIMIT = 9 * 1024 * 1024


async def read_json_object(req: Request) -> dict[str, Any]:
    """A JSON object body (possibly gzip/br/deflate encoded); an empty body is `{}`.

    Every JSON body of the API is read here: bounded in size, depth and content (see
    `core.parsing.load_json`)."""
    raw = await req.read_body(JSON_BODY_LIMIT)
    data = decode_bytes(raw, normalize_encoding(req.header("content-encoding")), limit=JSON_BODY_LIMIT)
    if not data.strip():
        return {}
    try:
        payload = load_json(data)
    except ValueError as err:  # UnicodeDecodeError included
        raise InvalidRequestError(f"The request body is not valid JSON: {err}") from None
    if not isinstance(payload, dict):
        raise InvalidRequestError("POST data must be a JSON object")
    return payload


def _view(req: Request, svc: Services, resolved: Resolved) -> dict[str, Any]:
    return store_view(
        resolved.store,
        owner=resolved.owner,
        permission=resolved.permission,
        base_url=public_base(req.scope, svc.settings),
        now_ms=svc.clock.now_ms(),
        expires_at=svc.retention.expires_at(resolved.store),
    )


async def list_stores(req: Request, send: Send, svc: Services, who: Principal) -> None:
    offset = req.int_param("offset", 0)
    limit = req.int_param("limit", 0, maximum=MAX_PAGE) or MAX_PAGE
    desc = req.bool_param("desc")
    unnamed = req.bool_param("unnamed")
    page = await svc.stores.list(
        who, offset=offset, limit=limit, desc=desc, unnamed=unnamed, ownership=req.query.get("ownership") or None
    )
    items = [_view(req, svc, resolved) for resolved in page.items]
    await send_json(
        send,
        200,
        {
            "data": {
                "total": page.total,
                "offset": offset,
                "limit": limit,
                "count": len(items),
                "desc": desc,
                "unnamed": unnamed,
                "items": items,
            }
        },
    )


async def create_store(req: Request, send: Send, svc: Services, who: Principal) -> None:
    name = req.query.get("name") or None
    body = await read_json_object(req)
    given = body.get("name")
    if given is not None and not isinstance(given, str):
        raise InvalidValueError("Invalid value provided: name must be a string or null.")
    if not name and given:
        name = given
    resolved, created = await svc.stores.get_or_create(who, name=name, schema=body.get("schema"))
    headers = []
    if created:
        headers.append((b"location", (public_base(req.scope, svc.settings) + store_path(resolved.store.id)).encode()))
    await send_json(send, 201 if created else 200, {"data": _view(req, svc, resolved)}, headers)


async def get_store(req: Request, send: Send, svc: Services, who: Principal, segment: str) -> None:
    resolved = await svc.stores.get(who, segment, signature=req.query.get("signature") or None)
    await send_json(send, 200, {"data": _view(req, svc, resolved)})


async def update_store(req: Request, send: Send, svc: Services, who: Principal, segment: str) -> None:
    body = await read_json_object(req)
    name = body.get("name", UNSET)
    if name is not UNSET and name is not None and not isinstance(name, str):
        raise InvalidValueError("Invalid value provided: name must be a string or null.")
    access = body["generalAccess"] if body.get("generalAccess") is not None else UNSET
    if access is not UNSET and not isinstance(access, str):
        raise InvalidValueError("Invalid value provided: generalAccess must be a string.")
    title = body.get("title", UNSET)
    if title is not UNSET and title is not None and not isinstance(title, str):
        raise InvalidValueError("Invalid value provided: title must be a string or null.")
    rules = parse_rules(body["recordExpiry"]) if "recordExpiry" in body else UNSET
    resolved = await svc.stores.update(who, segment, name=name, general_access=access, title=title, record_expiry=rules)
    await send_json(send, 200, {"data": _view(req, svc, resolved)})


async def delete_store(req: Request, send: Send, svc: Services, who: Principal, segment: str) -> None:
    await svc.stores.delete(who, segment)
    await send_empty(send, 204)
