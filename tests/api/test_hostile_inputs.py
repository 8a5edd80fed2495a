"""Hostile client input, family by family: every one answers a 4xx in the Apify envelope,
changes nothing, and leaves no traceback in the log (on every backend)."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from conftest import ALICE_TOKEN, Api
from kvbox.api.app import MAX_URI_LENGTH, ApiApp
from kvbox.api.http import Message, Receive, Scope, Send
from kvbox.core.parsing import MAX_JSON_DEPTH

pytestmark = pytest.mark.anyio

S = "/v2/key-value-stores"
JSON = {"content-type": "application/json"}
SCHEMA = {
    "actorKeyValueStoreSchemaVersion": 1,
    "collections": {"doc": {"keyPrefix": "doc", "jsonSchema": {"type": "object"}}},
}


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def schema_with(json_schema: dict[str, Any]) -> bytes:
    body = {
        "schema": {"actorKeyValueStoreSchemaVersion": 1, "collections": {"c": {"key": "C", "jsonSchema": json_schema}}}
    }
    return json.dumps(body).encode()


def nested_schema(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


@pytest.fixture
def tracebacks(caplog: pytest.LogCaptureFixture) -> Iterator[list[logging.LogRecord]]:
    """The log records that carry a traceback or say "error"; the test asserts there are none."""
    caplog.set_level(logging.INFO)
    found: list[logging.LogRecord] = []
    yield found
    found.extend(r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR)
    assert not found, [r.getMessage() for r in found]


@pytest.fixture
async def ids(api: Api) -> dict[str, str]:
    store = await api.create_store("plain")
    r = await api.client.put(f"{S}/{store['id']}/records/k", content=b"v", headers=api.auth())
    assert r.status_code == 201
    typed = await api.client.post(S, params={"name": "typed"}, json={"schema": SCHEMA}, headers=api.auth())
    assert typed.status_code == 201, typed.text
    return {"id": store["id"], "typed": typed.json()["data"]["id"]}


async def snapshot(api: Api) -> Any:
    """Everything alice can see: her stores (without volatile fields) and each one's keys."""
    stores = (await api.client.get(S, params={"unnamed": "1"}, headers=api.auth())).json()["data"]["items"]
    out = {}
    for s in stores:
        keys = (await api.client.get(f"{S}/{s['id']}/keys", headers=api.auth())).json()["data"]["items"]
        out[s["id"]] = (s["name"], s["title"], s["schema"], s["generalAccess"], [(k["key"], k["size"]) for k in keys])
    return out


# (method, path, headers, body, status, type); `{id}` is a plain store, `{typed}` one with SCHEMA.
Case = tuple[str, str, Mapping[str, str | bytes], bytes | None, int, str]
CASES: dict[str, Case] = {
    # JSON nested past the limit, in every JSON body
    "deep store create": ("POST", S, JSON, deep(5000).encode(), 400, "invalid-request"),
    "deep store update": ("PUT", S + "/{id}", JSON, deep(5000).encode(), 400, "invalid-request"),
    "deep users/me": ("PUT", "/v2/users/me", JSON, deep(5000).encode(), 400, "invalid-request"),
    "deep grant": ("PUT", S + "/{id}/grants/bob", JSON, deep(5000).encode(), 400, "invalid-request"),
    "deep just past the limit": ("POST", S, JSON, deep(MAX_JSON_DEPTH + 1).encode(), 400, "invalid-request"),
    "deep schema": ("POST", S, JSON, ('{"schema":' + deep(300) + "}").encode(), 400, "invalid-request"),
    "schema nested hundreds deep": ("POST", S, JSON, schema_with(nested_schema(300)), 400, "invalid-request"),
    "deep record in a collection": (
        "PUT", S + "/{typed}/records/doc1", JSON, ('{"a":' * 3000 + "1" + "}" * 3000).encode(), 400,
        "schema-validation-failed",
    ),
    # JSON schemas that validation could not finish
    "recursive $ref": ("POST", S, JSON, schema_with({"$ref": "#"}), 400, "store-schema-invalid"),
    "recursive $ref via allOf": (
        "POST", S, JSON, schema_with({"definitions": {"a": {"allOf": [{"$ref": "#/definitions/b"}]},
                                                      "b": {"not": {"$ref": "#/definitions/a"}}},
                                      "$ref": "#/definitions/a"}), 400, "store-schema-invalid",
    ),
    "remote $ref": ("POST", S, JSON, schema_with({"$ref": "http://127.0.0.1:9/schema.json"}), 400,
                    "store-schema-invalid"),
    "dangling $ref": ("POST", S, JSON, schema_with({"$ref": "#/definitions/none"}), 400, "store-schema-invalid"),
    # what Python's json takes but JSON (and PostgreSQL) does not
    "NaN": ("POST", S, JSON, b'{"schema": {"actorKeyValueStoreSchemaVersion": NaN}}', 400, "invalid-request"),
    "huge float": ("PUT", S + "/{id}", JSON, b'{"title": 1e999}', 400, "invalid-request"),
    "lone surrogate": ("PUT", S + "/{id}", JSON, b'{"title": "\\ud800"}', 400, "invalid-request"),
    "NUL in a title": ("PUT", S + "/{id}", JSON, b'{"title": "a\\u0000b"}', 400, "invalid-request"),
    "not UTF-8": ("PUT", S + "/{id}", JSON, b'{"title": "\xff"}', 400, "invalid-request"),
    # wrong types
    "name 5 on create": ("POST", S, JSON, b'{"name": 5}', 400, "invalid-value"),
    "name list on create": ("POST", S, JSON, b'{"name": ["a"]}', 400, "invalid-value"),
    "name 5 on update": ("PUT", S + "/{id}", JSON, b'{"name": 5}', 400, "invalid-value"),
    "permission 5": ("PUT", S + "/{id}/grants/bob", JSON, b'{"permission": 5}', 400, "invalid-value"),
    # integers out of range, or not integers at all
    "offset 20 digits": ("GET", S + "?offset=99999999999999999999", {}, None, 400, "invalid-parameter"),
    "offset 2^53": ("GET", S + "?offset=9007199254740992", {}, None, 400, "invalid-parameter"),
    "offset negative": ("GET", S + "?offset=-1", {}, None, 400, "invalid-parameter"),
    "offset superscript": ("GET", S + "?offset=%C2%B2", {}, None, 400, "invalid-parameter"),
    "offset underscore": ("GET", S + "?offset=1_0", {}, None, 400, "invalid-parameter"),
    "limit 5000 digits": ("GET", S + "/{id}/keys?limit=" + "9" * 5000, {}, None, 400, "invalid-parameter"),
    "content-length superscript": ("PUT", S + "/{id}/records/k", {"content-length": "\u00b2".encode()}, b"", 400,
                                   "invalid-parameter"),
    # charsets
    "unknown charset": ("PUT", S + "/{typed}/records/doc1", {"content-type": "application/json; charset=nope"},
                        b"{}", 400, "invalid-content-type-header"),
    "charset that is no text encoding": (
        "PUT", S + "/{typed}/records/doc1", {"content-type": "application/json; charset=base64"}, b"{}", 400,
        "invalid-content-type-header",
    ),
    # NUL where a name, key or cursor goes
    "NUL in a cursor": ("GET", S + "/{id}/keys?exclusiveStartKey=%00", {}, None, 400, "invalid-parameter"),
    "NUL in a prefix": ("GET", S + "/{id}/keys?prefix=a%00", {}, None, 400, "invalid-parameter"),
    "NUL in a store name": ("GET", S + "/~plain%00", {}, None, 404, "record-not-found"),
    "NUL in a store ID": ("GET", S + "/abc%00def", {}, None, 404, "record-not-found"),
    "NUL in a user": ("PUT", S + "/{id}/grants/bo%00b", JSON, b'{"permission": "READ"}', 404,
                      "user-or-token-not-found"),
    "NUL in a key": ("PUT", S + "/{id}/records/a%00b", {}, b"v", 400, "invalid-record-key"),
    # a URI longer than kvbox reads (granian's own limit is higher)
    "long URI": ("GET", S + "/{id}/keys?prefix=" + "a" * MAX_URI_LENGTH, {}, None, 414, "uri-too-long"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_hostile_input_gets_a_4xx_and_changes_nothing(
    api: Api, ids: dict[str, str], case: Case, tracebacks: list[logging.LogRecord],
) -> None:  # fmt: skip
    method, path, headers, body, status, type_ = case
    before = await snapshot(api)
    raw = [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in {**api.auth(), **headers}.items()]
    r = await api.client.request(method, path.format(**ids), headers=raw, content=body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["type"] == type_
    assert error["message"]
    assert await snapshot(api) == before


async def test_json_at_the_depth_limit_is_accepted(api: Api, ids: dict[str, str]) -> None:
    r = await api.client.put(f"{S}/{ids['typed']}/records/doc1", content=b'{"a":' + deep(MAX_JSON_DEPTH - 1).encode()
                             + b"}", headers={**api.auth(), **JSON})  # fmt: skip
    assert r.status_code == 201, r.text
    recursive = {"type": "object", "properties": {"child": {"$ref": "#"}}}  # a tree: recursion that descends
    r = await api.client.post(S, params={"name": "tree"}, content=schema_with(recursive), headers=api.auth())
    assert r.status_code == 201, r.text
    tree = r.json()["data"]["id"]
    r = await api.client.put(f"{S}/{tree}/records/C", json={"child": {"child": {}}}, headers=api.auth())
    assert r.status_code == 201, r.text
    r = await api.client.put(f"{S}/{tree}/records/C", json={"child": {"child": 1}}, headers=api.auth())
    assert r.status_code == 400 and r.json()["error"]["type"] == "schema-validation-failed"


async def test_a_latin1_record_in_a_collection_is_read_with_its_charset(api: Api, ids: dict[str, str]) -> None:
    headers = {**api.auth(), "content-type": "application/json; charset=latin-1"}
    r = await api.client.put(f"{S}/{ids['typed']}/records/doc1", content='{"é": 1}'.encode("latin-1"),
                             headers=headers)  # fmt: skip
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("where", ["record", "store body"])
async def test_multi_member_gzip_is_accepted(api: Api, ids: dict[str, str], where: str) -> None:
    headers = {**api.auth(), "content-encoding": "gzip", **JSON}
    if where == "record":
        body = gzip.compress(b'{"a": ') + gzip.compress(b"1}")
        r = await api.client.put(f"{S}/{ids['id']}/records/multi", content=body, headers=headers)
        assert r.status_code == 201, r.text
        got = await api.client.get(
            f"{S}/{ids['id']}/records/multi", headers={**api.auth(), "accept-encoding": "identity"}
        )
        assert got.content == b'{"a": 1}'
    else:
        body = gzip.compress(b'{"title": ') + gzip.compress(b'"two members"}')
        r = await api.client.put(f"{S}/{ids['id']}", content=body, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["data"]["title"] == "two members"


async def test_gzip_followed_by_garbage_is_refused(api: Api, ids: dict[str, str]) -> None:
    body = gzip.compress(b"ok") + b"garbage"
    r = await api.client.put(f"{S}/{ids['id']}/records/bad", content=body,
                             headers={**api.auth(), "content-encoding": "gzip"})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid-request"
    assert (await api.client.get(f"{S}/{ids['id']}/records/bad", headers=api.auth())).status_code == 404


GET_ROUTES = [
    "/v2/key-value-stores", S + "/{id}", S + "/{id}/keys", S + "/{id}/records", S + "/{id}/grants", "/v2/users/me",
    "/health", S + "/{id}/records/k", S + "/missing", S + "/{id}/records/missing",
]  # fmt: skip


@pytest.mark.parametrize("path", GET_ROUTES)
async def test_head_works_wherever_get_does(api: Api, ids: dict[str, str], path: str) -> None:
    url = path.format(**ids)
    get = await api.client.get(url, headers=api.auth())
    head = await api.client.head(url, headers=api.auth())
    assert head.status_code == get.status_code
    assert head.content == b""
    assert head.headers.get("content-type") == get.headers.get("content-type")
    if get.status_code == 200 and "content-length" in get.headers:
        assert head.headers["content-length"] == get.headers["content-length"]


async def test_head_of_the_zip_stops_before_the_body(api: Api, ids: dict[str, str]) -> None:
    r = await api.client.head(f"{S}/{ids['id']}/records", headers=api.auth())
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip" and r.content == b""


def cut_short(app: ApiApp, sent: list[Message]) -> tuple[Scope, Receive, Send]:
    """A PUT whose client sends a first chunk and then vanishes (or sends a broken chunk)."""
    scope: Scope = {
        "type": "http", "method": "PUT", "path": "/v2/key-value-stores/~plain/records/cut",
        "raw_path": b"/v2/key-value-stores/~plain/records/cut", "query_string": b"",
        "headers": [(b"authorization", f"Bearer {ALICE_TOKEN}".encode()), (b"content-length", b"100000")],
        "client": ("127.0.0.1", 1),
    }  # fmt: skip
    messages: AsyncIterator[Message] = _messages([
        {"type": "http.request", "body": b"x" * 5000, "more_body": True}, {"type": "http.disconnect"},
    ])  # fmt: skip

    async def receive() -> Message:
        return await messages.__anext__()

    async def send(message: Message) -> None:
        sent.append(message)

    return scope, receive, send


async def _messages(items: list[Message]) -> AsyncIterator[Message]:
    for item in items:
        yield item


async def test_an_upload_cut_short_is_a_400_and_one_info_line(
    api: Api, ids: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kvbox")
    app = ApiApp(api.services)
    sent: list[Message] = []
    await app(*cut_short(app, sent))
    assert sent[0]["status"] == 400
    assert json.loads(sent[1]["body"])["error"]["type"] == "invalid-request"
    mine = [r for r in caplog.records if r.name.startswith("kvbox")]
    assert [(r.levelno, r.exc_info) for r in mine] == [(logging.INFO, None)]
    assert "ended early" in mine[0].getMessage()
    r = await api.client.get(f"{S}/{ids['id']}/records/cut", headers=api.auth())
    assert r.status_code == 404


async def test_an_unexpected_exception_is_a_500_logged_once(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(api.services.stores, "list", broken)
    r = await api.client.get(S, headers=api.auth())
    assert r.status_code == 500
    assert r.json() == {"error": {"type": "internal-server-error", "message": "An internal error occurred."}}
    logged = [rec for rec in caplog.records if rec.exc_info]
    assert len(logged) == 1 and "GET /v2/key-value-stores" in logged[0].getMessage()


async def test_an_error_after_the_response_began_ends_it_quietly(
    api: Api, ids: dict[str, str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def failing_export(*args: object, **kwargs: object) -> AsyncIterator[Any]:
        raise ZeroDivisionError("midway")
        yield  # an async generator

    monkeypatch.setattr(api.services.records, "iterate_for_export", failing_export)
    path = f"{S}/{ids['id']}/records"
    scope: Scope = {"type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"",
                    "headers": [(b"authorization", f"Bearer {ALICE_TOKEN}".encode())]}  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start" and sent:
            raise RuntimeError("the response has already started")  # as the server says
        sent.append(message)

    await ApiApp(api.services)(scope, receive, send)  # returns: the server then ends the connection
    assert sent[0]["status"] == 200
    assert len([rec for rec in caplog.records if rec.exc_info]) == 1
