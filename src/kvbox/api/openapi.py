"""The OpenAPI 3.0 document of the whole API, served at `GET /v2/openapi.json`.

Paths and methods come from the route table (`routes.ROUTES`, implicit `HEAD` included);
what each operation takes and answers comes from `OPERATIONS` here, and a test keeps the
two in step. `docs/openapi.json` is this document as `python -m kvbox.api.openapi` prints it.
"""

from __future__ import annotations

import json
from typing import Any

from kvbox.api.http import JSON_CONTENT_TYPE, Request, Send, send_bytes
from kvbox.service.container import Services
from kvbox.service.principal import Principal

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


_STR: Schema = {"type": "string"}
_INT: Schema = {"type": "integer", "minimum": 0}
_NULL_STR: Schema = {"type": "string", "nullable": True}
_ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": _STR, "message": _STR, "data": {"type": "object"}},
        }
    },
}
_PERMISSIONS = ["READ", "WRITE", "MANAGE"]
_ACCESS = ["RESTRICTED", "ANYONE_WITH_ID_CAN_READ", "ANYONE_WITH_NAME_CAN_READ", "FOLLOW_USER_SETTING"]
_STORE: Schema = {
    "type": "object",
    "required": ["id", "name", "userId", "createdAt", "modifiedAt", "accessedAt", "generalAccess", "stats"],
    "properties": {
        "id": _STR, "name": _NULL_STR, "title": _NULL_STR, "userId": _STR, "username": _NULL_STR,
        "createdAt": _STR, "modifiedAt": _STR, "accessedAt": _STR, "consoleUrl": _STR,
        "keysPublicUrl": _STR, "recordsPublicUrl": _STR, "schema": {"type": "object", "nullable": True},
        "generalAccess": {"type": "string", "enum": _ACCESS}, "urlSigningSecretKey": _NULL_STR,
        "recordCount": _INT, "expiresAt": _NULL_STR, "stats": {"type": "object"},
        "recordExpiry": {"type": "array", "items": _ref("ExpiryRule")},
    },
}  # fmt: skip
_EXPIRY_RULE: Schema = {
    "type": "object",
    "required": ["prefix", "expireAfterSecs"],
    "properties": {"prefix": _STR, "expireAfterSecs": {"type": "integer", "minimum": 1}},
}
_GRANT: Schema = {
    "type": "object",
    "required": ["userId", "username", "permission", "createdAt"],
    "properties": {"userId": _STR, "username": _STR, "permission": {"type": "string", "enum": _PERMISSIONS},
                   "createdAt": _STR},
}  # fmt: skip
_USER: Schema = {
    "type": "object",
    "required": ["id", "username", "createdAt", "defaultGeneralAccess"],
    "properties": {"id": _STR, "username": _STR, "createdAt": _STR,
                   "defaultGeneralAccess": {"type": "string", "enum": _ACCESS[:2]}},
}  # fmt: skip
_STORE_PAGE: Schema = {
    "type": "object",
    "required": ["total", "offset", "limit", "count", "desc", "items"],
    "properties": {"total": _INT, "offset": _INT, "limit": _INT, "count": _INT, "desc": {"type": "boolean"},
                   "unnamed": {"type": "boolean"}, "items": {"type": "array", "items": _ref("Store")}},
}  # fmt: skip
_KEY_PAGE: Schema = {
    "type": "object",
    "required": ["items", "count", "limit", "isTruncated"],
    "properties": {
        "items": {"type": "array", "items": {"type": "object", "required": ["key", "size"], "properties": {
            "key": _STR, "size": _INT, "recordPublicUrl": _STR, "contentType": _STR, "modifiedAt": _STR,
            "etag": _STR, "expiresAt": _NULL_STR}}},
        "count": _INT, "limit": _INT, "exclusiveStartKey": _NULL_STR, "isTruncated": {"type": "boolean"},
        "nextExclusiveStartKey": _NULL_STR,
    },
}  # fmt: skip

_EVENTS = ["RECORD.CREATED", "RECORD.UPDATED", "RECORD.DELETED", "RECORD.EXPIRED"]
_CHANGE: Schema = {
    "type": "object",
    "required": ["sequence", "eventType", "key", "etag", "size", "contentType", "createdAt"],
    "properties": {"sequence": _INT, "eventType": {"type": "string", "enum": _EVENTS}, "key": _STR,
                   "etag": _NULL_STR, "size": {**_INT, "nullable": True}, "contentType": _NULL_STR,
                   "createdAt": _STR},
}  # fmt: skip
_CHANGE_PAGE: Schema = {
    "type": "object",
    "required": ["items", "lastSequence"],
    "properties": {"items": {"type": "array", "items": _ref("Change")}, "lastSequence": _INT},
}
_WEBHOOK: Schema = {
    "type": "object",
    "required": ["id", "requestUrl", "eventTypes", "keyPrefix", "isEnabled", "createdAt", "modifiedAt"],
    "properties": {"id": _STR, "requestUrl": _STR, "eventTypes": {"type": "array", "items": {"type": "string",
                   "enum": _EVENTS}}, "keyPrefix": _STR, "isEnabled": {"type": "boolean"}, "createdAt": _STR,
                   "modifiedAt": _STR, "secret": {"type": "string", "description": "Only when kvbox made it."}},
}  # fmt: skip
_ATTEMPT: Schema = {
    "type": "object",
    "required": ["deliveryId", "sequence", "eventType", "attempt", "status", "responseStatus", "durationMillis",
                 "error", "createdAt"],
    "properties": {"deliveryId": _STR, "sequence": _INT, "eventType": _STR, "attempt": _INT,
                   "status": {"type": "string", "enum": ["SUCCEEDED", "FAILED", "PENDING"]},
                   "responseStatus": {**_INT, "nullable": True}, "durationMillis": {**_INT, "nullable": True},
                   "error": _NULL_STR, "createdAt": _STR},
}  # fmt: skip


SCHEMAS: dict[str, Schema] = {
    "Error": _ERROR, "Store": _STORE, "StorePage": _STORE_PAGE, "KeyPage": _KEY_PAGE, "Grant": _GRANT, "User": _USER,
    "ExpiryRule": _EXPIRY_RULE, "Change": _CHANGE, "ChangePage": _CHANGE_PAGE, "Webhook": _WEBHOOK,
    "DeliveryAttempt": _ATTEMPT,
}  # fmt: skip


def _data(schema: Schema) -> Schema:
    return {"type": "object", "required": ["data"], "properties": {"data": schema}}


def _json(description: str, schema: Schema) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: Schema, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": _STR, "description": description}


def _path(name: str, description: str, pattern: str | None = None) -> dict[str, Any]:
    schema: Schema = {"type": "string", "minLength": 1}
    if pattern is not None:
        schema["pattern"] = pattern
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


_BOOL: Schema = {"type": "boolean"}
STORE = _path("store", "A store ID, `~name` (the caller's) or `username~name`.")
KEY = _path("key", "A record key: 1-256 characters of a-zA-Z0-9!-_.'().", r"^[a-zA-Z0-9!\-_.'()]{1,256}$")
USER = _path("user", "A username or user ID.")
SIGNATURE = _query("signature", _STR, "A record or storage signature (grants READ).")
PREFIX = _query("prefix", _STR, "Only keys starting with this.")
COLLECTION = _query("collection", _STR, "Only keys of this collection of the store's schema.")
ERROR_RESPONSES = {
    "400": "Invalid input", "401": "No valid token", "403": "Not allowed", "404": "Not found",
    "405": "Method not allowed", "413": "Body too large", "414": "URI too long",
    "415": "Unsupported Content-Encoding", "429": "Rate limit exceeded", "503": "Storage unavailable; retry later",
    "507": "No space left; nothing was written",
}  # fmt: skip
ERRORS = {status: {"$ref": f"#/components/responses/E{status}"} for status in ERROR_RESPONSES}
_ANY_BODY = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
_JSON_OBJECT = {"type": "object"}


def _op(summary: str, responses: dict[str, Any], *, params: tuple[dict[str, Any], ...] = (),
        body: dict[str, Any] | None = None, auth: bool = True) -> dict[str, Any]:  # fmt: skip
    op: dict[str, Any] = {"summary": summary, "parameters": list(params), "responses": {**responses, **ERRORS}}
    if body is not None:
        op["requestBody"] = {"required": False, "content": body}
    if not auth:
        op["security"] = []
    return op


_S = "/v2/key-value-stores"
_R = _S + "/{store}/records/{key}"
IF_MATCH = _header("If-Match", "Only if the record's ETag is one of these (`*`: it exists); else 412.")
IF_NONE_MATCH = _header("If-None-Match", "Reads: 304 when the ETag is one of these. Writes: `*` creates only.")
PRECONDITION = {"412": _json("A precondition did not hold; nothing changed", _ref("Error"))}
_READ_HEADERS = (IF_MATCH, IF_NONE_MATCH, _header("If-Modified-Since", "304 unless modified after this HTTP date."))
_RANGE_HEADERS = (_header("Range", "`bytes=A-B`, `bytes=A-` or `bytes=-N`: part of the record (206)."),
                  _header("If-Range", "Honour Range only if the record still has this ETag."))  # fmt: skip
_RECORD_READ = {"200": {"description": "The record's bytes", "content": _ANY_BODY},
                "304": {"description": "Not modified (If-None-Match, If-Modified-Since)"}, **PRECONDITION}  # fmt: skip
_RECORD_PARAMS = (STORE, KEY, SIGNATURE, _query("attachment", _BOOL, "Answer Content-Disposition: attachment."))
_RECORD_GET = _op(
    "Read a record (or a range of it)",
    {**_RECORD_READ, "206": {"description": "The range asked for", "content": _ANY_BODY},
     "416": _json("The range is outside the record", _ref("Error"))},
    params=(*_RECORD_PARAMS, *_READ_HEADERS, *_RANGE_HEADERS),
)  # fmt: skip
_RECORD_HEAD = _op("A record's headers", _RECORD_READ, params=(*_RECORD_PARAMS, *_READ_HEADERS))
_EXPIRES = (_query("expiresIn", {"type": "integer", "minimum": 1}, "Seconds until the record expires (kvbox)."),
            _query("expiresAt", _STR, "When the record expires, ISO 8601 (kvbox)."))  # fmt: skip
_RECORD_PUT = _op(
    "Write a record", {"201": _json("Stored; the new ETag in ETag", _JSON_OBJECT), **PRECONDITION},
    params=(STORE, KEY, *_EXPIRES, IF_MATCH, IF_NONE_MATCH), body=_ANY_BODY,
)  # fmt: skip
_STORE_BODY = {"application/json": {"schema": {"type": "object", "properties": {
    "name": _NULL_STR, "title": _NULL_STR, "generalAccess": {"type": "string", "enum": _ACCESS},
    "recordExpiry": {"type": "array", "items": _ref("ExpiryRule")}}}}}  # fmt: skip
_STORE_GET = _op("Get a store", {"200": _json("The store", _data(_ref("Store")))}, params=(STORE, SIGNATURE))
_LIST_STORES = _op(
    "List the caller's stores", {"200": _json("A page of stores", _data(_ref("StorePage")))},
    params=(_query("offset", _INT, "Stores to skip."), _query("limit", _INT, "Page size (max 1000)."),
            _query("desc", _BOOL, "Newest first."), _query("unnamed", _BOOL, "Include unnamed stores."),
            _query("ownership", {"type": "string", "enum": ["ownedByMe", "sharedWithMe"]}, "Owned or shared.")),
)  # fmt: skip
_LIST_KEYS = _op(
    "List keys", {"200": _json("A page of keys", _data(_ref("KeyPage")))},
    params=(STORE, _query("exclusiveStartKey", _STR, "List keys after this one."),
            _query("limit", _INT, "Page size (max 1000)."), PREFIX, COLLECTION, SIGNATURE),
)  # fmt: skip
_ZIP = _op("Every record as a ZIP", {"200": {"description": "A ZIP archive", "content": {
    "application/zip": {"schema": {"type": "string", "format": "binary"}}}}},
    params=(STORE, PREFIX, COLLECTION, SIGNATURE))  # fmt: skip
_GRANT_LIST = {"type": "object", "properties": {"total": _INT, "count": _INT,
                                               "items": {"type": "array", "items": _ref("Grant")}}}  # fmt: skip
_GRANTS = _op("Who the store is shared with", {"200": _json("The grants", _data(_GRANT_LIST))}, params=(STORE,))
_ME = _op("The caller's account", {"200": _json("The user", _data(_ref("User")))})
_HEALTH = _op("The process serves requests", {"200": _json("OK", _data({"type": "object"}))}, auth=False)
_OPENAPI = _op("This document", {"200": _json("OpenAPI 3.0", {"type": "object"})}, auth=False)
_READY = _op("The index and the blob store answer", {"200": _json("Ready", _data({"type": "object"}))}, auth=False)
_METRICS = _op("Prometheus metrics (a metrics token, unless public)",
               {"200": {"description": "The Prometheus text format", "content": {"text/plain": {"schema": _STR}}}},
               auth=False)  # fmt: skip
_CHANGES = _op(
    "The store's changes after a cursor (kvbox); `Accept: text/event-stream` streams them",
    {"200": {"description": "A page of changes, or an event stream", "content": {
        "application/json": {"schema": _data(_ref("ChangePage"))}, "text/event-stream": {"schema": _STR}}},
     "410": _json("Changes after `after` are no longer kept", _ref("Error"))},
    params=(STORE, _query("after", _INT, "The last sequence seen (default 0)."),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "Most changes (default 1000)."),
            _query("wait", {"type": "integer", "minimum": 0, "maximum": 60}, "Seconds to wait for a first change."),
            _header("Last-Event-ID", "Resume an event stream after this sequence (wins over `after`)."), SIGNATURE),
)  # fmt: skip
WEBHOOK = _path("webhook", "A webhook ID.")
_WEBHOOK_BODY = {"application/json": {"schema": {"type": "object", "properties": {
    "requestUrl": _STR, "eventTypes": {"type": "array", "items": {"type": "string", "enum": _EVENTS}},
    "keyPrefix": _STR, "isEnabled": _BOOL, "secret": _STR}}}}  # fmt: skip
_WEBHOOK_ITEMS = {"type": "object", "required": ["items"],
                  "properties": {"items": {"type": "array", "items": _ref("Webhook")}}}  # fmt: skip
_WEBHOOKS = _op("The store's webhooks (kvbox)", {"200": _json("The webhooks", _data(_WEBHOOK_ITEMS))}, params=(STORE,))
_WEBHOOK_GET = _op("A webhook (kvbox)", {"200": _json("The webhook", _data(_ref("Webhook")))}, params=(STORE, WEBHOOK))
_ATTEMPT_ITEMS = {"type": "object", "required": ["items"],
                  "properties": {"items": {"type": "array", "items": _ref("DeliveryAttempt")}}}  # fmt: skip
_DELIVERIES = _op("A webhook's pending deliveries and last 100 attempts (kvbox)",
                  {"200": _json("Newest first", _data(_ATTEMPT_ITEMS))}, params=(STORE, WEBHOOK))  # fmt: skip

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    (_R, "GET"): _RECORD_GET,
    (_R, "HEAD"): _RECORD_HEAD,
    (_R, "PUT"): _RECORD_PUT,
    (_R, "POST"): _RECORD_PUT,
    (_R, "DELETE"): _op("Delete a record", {"204": {"description": "Deleted (also when missing)"}, **PRECONDITION},
                        params=(STORE, KEY, IF_MATCH)),
    (_S + "/{store}/keys", "GET"): _LIST_KEYS,
    (_S + "/{store}/keys", "HEAD"): _LIST_KEYS,
    (_S + "/{store}/records", "GET"): _ZIP,
    (_S + "/{store}/records", "HEAD"): _ZIP,
    (_S + "/{store}/records", "DELETE"): _op(
        "Delete every record under a prefix (kvbox)",
        {"200": _json("How many went", _data({"type": "object", "required": ["deletedCount"],
                                              "properties": {"deletedCount": _INT}}))},
        params=(STORE, {**_query("prefix", _STR, "Required; empty: every record."), "required": True}),
    ),
    (_S + "/{store}", "GET"): _STORE_GET,
    (_S + "/{store}", "HEAD"): _STORE_GET,
    (_S + "/{store}", "PUT"): _op("Update a store", {"200": _json("The store", _data(_ref("Store")))}, params=(STORE,),
                                  body=_STORE_BODY),
    (_S + "/{store}", "DELETE"): _op("Delete a store", {"204": {"description": "Deleted"}}, params=(STORE,)),
    (_S, "GET"): _LIST_STORES,
    (_S, "HEAD"): _LIST_STORES,
    (_S, "POST"): _op(
        "Get or create a store", {"200": _json("The existing store", _data(_ref("Store"))),
                                  "201": _json("The new store", _data(_ref("Store")))},
        params=(_query("name", _STR, "The store's name (none: an unnamed store)."),),
        body={"application/json": {"schema": {"type": "object", "properties": {
            "name": _NULL_STR, "schema": {"type": "object"}}}}},
    ),
    (_S + "/{store}/grants", "GET"): _GRANTS,
    (_S + "/{store}/grants", "HEAD"): _GRANTS,
    (_S + "/{store}/grants/{user}", "PUT"): _op(
        "Share the store with a user", {"200": _json("The grant", _data(_ref("Grant")))}, params=(STORE, USER),
        body={"application/json": {"schema": {"type": "object", "properties": {
            "permission": {"type": "string", "enum": ["READ", "WRITE", "MANAGE"]}}}}},
    ),
    (_S + "/{store}/grants/{user}", "DELETE"): _op("Stop sharing", {"204": {"description": "Unshared"}},
                                                   params=(STORE, USER)),
    (_S + "/{store}/changes", "GET"): _CHANGES,
    (_S + "/{store}/changes", "HEAD"): _CHANGES,
    (_S + "/{store}/webhooks", "GET"): _WEBHOOKS,
    (_S + "/{store}/webhooks", "HEAD"): _WEBHOOKS,
    (_S + "/{store}/webhooks", "POST"): _op(
        "Create a webhook (kvbox); a secret kvbox makes is returned this once",
        {"201": _json("The webhook", _data(_ref("Webhook")))}, params=(STORE,), body=_WEBHOOK_BODY),
    (_S + "/{store}/webhooks/{webhook}", "GET"): _WEBHOOK_GET,
    (_S + "/{store}/webhooks/{webhook}", "HEAD"): _WEBHOOK_GET,
    (_S + "/{store}/webhooks/{webhook}", "PUT"): _op(
        "Update a webhook (kvbox)", {"200": _json("The webhook", _data(_ref("Webhook")))},
        params=(STORE, WEBHOOK), body=_WEBHOOK_BODY),
    (_S + "/{store}/webhooks/{webhook}", "DELETE"): _op("Delete a webhook (kvbox)", {"204": {"description": "Deleted"}},
                                                        params=(STORE, WEBHOOK)),
    (_S + "/{store}/webhooks/{webhook}/deliveries", "GET"): _DELIVERIES,
    (_S + "/{store}/webhooks/{webhook}/deliveries", "HEAD"): _DELIVERIES,
    ("/v2/users/me", "GET"): _ME,
    ("/v2/users/me", "HEAD"): _ME,
    ("/v2/users/me", "PUT"): _op("Change the caller's default access", {"200": _json("The user", _data(_ref("User")))},
                                 body={"application/json": {"schema": {"type": "object", "properties": {
                                     "defaultGeneralAccess": {"type": "string", "enum": _ACCESS[:2]}}}}}),
    ("/v2/openapi.json", "GET"): _OPENAPI,
    ("/v2/openapi.json", "HEAD"): _OPENAPI,
    ("/health", "GET"): _HEALTH,
    ("/health", "HEAD"): _HEALTH,
    ("/health/ready", "GET"): _READY,
    ("/health/ready", "HEAD"): _READY,
    ("/metrics", "GET"): _METRICS,
    ("/metrics", "HEAD"): _METRICS,
}  # fmt: skip


def openapi_document() -> dict[str, Any]:
    """The document, with one path per route and one operation per method it answers."""
    from kvbox.api.routes import ROUTES

    paths: dict[str, Any] = {}
    for route in ROUTES:
        paths[route.path] = {m.lower(): OPERATIONS[(route.path, m)] for m in route.allowed}
    return {
        "openapi": "3.0.3",
        "info": {"title": "kvbox", "version": "2", "description": "The Apify API v2 key-value-store endpoints "
                 "and kvbox's extensions (sharing, account settings, record expiry, conditional and range requests, "
                 "change feed and webhooks, operations endpoints)."},
        "components": {
            "schemas": SCHEMAS,
            "responses": {f"E{status}": _json(text, _ref("Error")) for status, text in ERROR_RESPONSES.items()},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }  # fmt: skip


def document_bytes() -> bytes:
    """The document as served and as published in `docs/openapi.json`."""
    return (json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n").encode()


_served: list[bytes] = []


async def get_openapi(req: Request, send: Send, svc: Services, who: Principal) -> None:
    if not _served:
        _served.append(document_bytes())
    await send_bytes(
        send,
        200,
        [(b"content-type", JSON_CONTENT_TYPE), (b"content-length", str(len(_served[0])).encode())],
        _served[0],
    )


if __name__ == "__main__":
    import sys

    sys.stdout.buffer.write(document_bytes())
