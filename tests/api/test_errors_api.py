"""Every failure class leaves the app in the same envelope; every route answers CORS preflight."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from conftest import ALICE_TOKEN, BOB_TOKEN, Api

pytestmark = pytest.mark.anyio

S = "/v2/key-value-stores"
SCHEMA = {
    "actorKeyValueStoreSchemaVersion": 1,
    "collections": {"cfg": {"title": "Config", "key": "CFG", "contentTypes": ["application/json"]}},
}


@dataclass(frozen=True)
class Case:
    method: str
    path: str  # `{id}` is a store of alice's holding record `k`; `{typed}` one with SCHEMA
    status: int
    type: str
    token: str | None = ALICE_TOKEN
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    params: dict[str, str] = field(default_factory=dict)


JSON = {"content-type": "application/json"}
HUGE = {"content-length": str(64 << 20)}
STORE, RECORD, TYPED = S + "/{id}", S + "/{id}/records/k", S + "/{typed}/records/CFG"

CASES = {
    "unknown route": Case("GET", "/v2/datasets", 404, "page-not-found"),
    "api root": Case("GET", "/v2", 404, "page-not-found"),
    "too deep": Case("GET", RECORD + "/more", 404, "page-not-found"),
    "unknown sub-resource": Case("GET", STORE + "/nope", 404, "page-not-found"),
    "405 collection": Case("PATCH", S, 405, "method-not-allowed"),
    "405 store": Case("POST", STORE, 405, "method-not-allowed"),
    "405 keys": Case("DELETE", STORE + "/keys", 405, "method-not-allowed"),
    "405 record": Case("PATCH", RECORD, 405, "method-not-allowed"),
    "400 invalid-record-key": Case("PUT", STORE + "/records/a%2Fb", 400, "invalid-record-key", body=b"v"),
    "400 invalid-parameter": Case("GET", S, 400, "invalid-parameter", params={"limit": "lots"}),
    "400 invalid-request": Case("POST", S, 400, "invalid-request", body=b"[1]", headers=JSON),
    "400 invalid-value": Case("POST", S, 400, "invalid-value", params={"name": "no_underscores"}),
    "400 name-not-unique": Case("PUT", STORE, 400, "name-not-unique", body=b'{"name": "typed"}', headers=JSON),
    "400 invalid-collection": Case("GET", STORE + "/keys", 400, "invalid-collection", params={"collection": "x"}),
    "400 store-schema-invalid": Case("POST", S, 400, "store-schema-invalid", body=b'{"schema": 1}', headers=JSON),
    "400 schema-validation-failed": Case("PUT", TYPED, 400, "schema-validation-failed", body=b"x"),
    "400 invalid-content-type": Case(
        "PUT", RECORD, 400, "invalid-content-type-header", body=b"x", headers={"content-type": "a/" + "b" * 2000}
    ),
    "400 corrupt gzip": Case("PUT", RECORD, 400, "invalid-request", body=b"x", headers={"content-encoding": "gzip"}),
    "401 token-not-provided": Case("GET", S, 401, "token-not-provided", token=None),
    "401 invalid-token": Case("GET", STORE, 401, "invalid-token", token="not-a-real-token-at-all"),
    "403 insufficient-permissions": Case("GET", RECORD, 403, "insufficient-permissions", token=BOB_TOKEN),
    "404 store": Case("GET", S + "/AAAAAAAAAAAAAAAAA", 404, "record-not-found"),
    "404 record": Case("GET", STORE + "/records/missing", 404, "record-not-found"),
    "412 put": Case("PUT", RECORD, 412, "precondition-failed", body=b"v", headers={"if-none-match": "*"}),
    "412 delete": Case("DELETE", RECORD, 412, "precondition-failed", headers={"if-match": '"stale"'}),
    "412 get": Case("GET", RECORD, 412, "precondition-failed", headers={"if-match": '"stale"'}),
    "413 record": Case("PUT", RECORD, 413, "request-too-large", body=b"v", headers=HUGE),
    "413 store body": Case("PUT", STORE, 413, "request-too-large", body=b"{}", headers={**HUGE, **JSON}),
    "415 record": Case(
        "PUT", RECORD, 415, "unsupported-content-encoding", body=b"v", headers={"content-encoding": "bla"}
    ),
    "415 store body": Case(
        "POST", S, 415, "unsupported-content-encoding", body=b"{}", headers={"content-encoding": "bla", **JSON}
    ),
    "416 range": Case("GET", RECORD, 416, "range-not-satisfiable", headers={"range": "bytes=1-"}),
}


@pytest.fixture
async def ids(api: Api) -> dict[str, str]:
    store = await api.create_store("plain")
    r = await api.client.put(f"{S}/{store['id']}/records/k", content=b"v", headers=api.auth())
    assert r.status_code == 201
    typed = await api.client.post(S, params={"name": "typed"}, json={"schema": SCHEMA}, headers=api.auth())
    assert typed.status_code == 201
    return {"id": store["id"], "typed": typed.json()["data"]["id"]}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
async def test_every_failure_has_the_same_envelope(api: Api, ids: dict[str, str], case: Case) -> None:
    r = await api.client.request(
        case.method,
        case.path.format(**ids),
        params=case.params,
        content=case.body,
        headers={**api.auth(case.token), **case.headers},
    )
    assert r.status_code == case.status, r.text
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.headers["access-control-allow-origin"] == "*"
    body: Any = r.json()
    assert list(body) == ["error"]
    error = body["error"]
    assert set(error) <= {"type", "message", "data"}
    assert error["type"] == case.type
    assert isinstance(error["message"], str) and error["message"].strip()
    if case.status == 416:
        assert r.headers["content-range"] == "bytes */1"  # record `k` holds one byte
    if case.status == 405:
        allowed = r.headers["allow"]
        assert "OPTIONS" in allowed.split(", ")
        assert case.method not in allowed.split(", ")
        assert error["message"] == f"This API endpoint can only be accessed using the following HTTP methods: {allowed}"


ROUTES = {
    "collection": (S, {"GET", "HEAD", "POST"}),
    "store": (S + "/{id}", {"GET", "HEAD", "PUT", "DELETE"}),
    "keys": (S + "/{id}/keys", {"GET", "HEAD"}),
    "zip": (S + "/{id}/records", {"GET", "HEAD", "DELETE"}),
    "record": (S + "/{id}/records/k", {"GET", "HEAD", "PUT", "POST", "DELETE"}),
    "health": ("/health", {"GET", "HEAD"}),
}


@pytest.mark.parametrize(("path", "methods"), list(ROUTES.values()), ids=list(ROUTES))
@pytest.mark.parametrize("token", [None, "not-a-real-token-at-all"], ids=["anonymous", "bad-token"])
async def test_preflight_answers_on_every_route(
    api: Api, ids: dict[str, str], path: str, methods: set[str], token: str | None
) -> None:
    # A browser preflight carries no credentials; a stray bad token must not break it either.
    headers = {
        **api.auth(token),
        "Origin": "https://console.example",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    r = await api.client.options(path.format(**ids), headers=headers)
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["access-control-allow-origin"] == "*"
    assert methods <= {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    allow_headers = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type", "content-encoding"} <= allow_headers
    assert {m.strip() for m in r.headers["allow"].split(",")} == methods
