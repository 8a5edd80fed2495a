"""The OpenAPI document: it covers every route, `docs/openapi.json` is the served document,
and schemathesis finds no 5xx and no answer that breaks the document."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import given, settings
from schemathesis.specs.openapi import checks

from conftest import ALICE_TOKEN
from fuzz.conftest import FUZZ, SCALE
from kvbox.api.openapi import OPERATIONS, document_bytes, openapi_document
from kvbox.api.routes import ROUTES
from kvbox.server import create_app
from kvbox.service.container import build_services
from kvbox.service.principal import Principal
from kvbox.service.settings import Settings

DOCS = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
# Examples per operation: 31 operations (all but the document itself), about 950 requests.
EXAMPLES = 30 * SCALE


def test_every_route_and_method_is_documented() -> None:
    served = {(route.path, m) for route in ROUTES for m in route.allowed}
    assert served == set(OPERATIONS)
    paths = openapi_document()["paths"]
    assert {(p, m.upper()) for p, ops in paths.items() for m in ops} == served


def test_the_published_document_is_the_served_one() -> None:
    assert DOCS.read_bytes() == document_bytes(), "regenerate: python -m kvbox.api.openapi > docs/openapi.json"


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The document as the app serves it, over an app on SQLite with alice and two stores."""
    data = tmp_path_factory.mktemp("openapi") / "data"
    svc = build_services(Settings(backend="sqlite", data_dir=data, public_url="http://testserver", rate_limits=False))
    svc.changes.max_wait_s = 0.05  # a long-poll answers at once: fuzzing is about answers, not waiting

    async def seed() -> None:
        issued = await svc.users.create_user("alice", token=ALICE_TOKEN)
        await svc.users.create_user("bob")
        store, _ = await svc.stores.get_or_create(Principal(user=issued.user), name="fuzz")
        for key in ("a", "b", "c"):
            await svc.records.put(Principal(user=issued.user), store.store.id, key, body=_one(b"{}"),
                                  content_type="application/json", content_encoding=None, content_length=2)  # fmt: skip

    asyncio.run(seed())
    app = create_app(services=svc)

    async def asgi(scope: Any, receive: Any, send: Any) -> None:  # a coroutine function, so it is seen as ASGI
        await app(scope, receive, send)

    schema = schemathesis.openapi.from_asgi("/v2/openapi.json", asgi)
    yield schema
    asyncio.run(svc.close())


CHECKS = [
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
]


_turn = itertools.count()


def check(case: Any) -> None:
    if next(_turn) % 2:  # every other case on a store and a user that exist, so more than 404s are checked
        if "store" in case.path_parameters:
            case.path_parameters["store"] = "~fuzz"
        if "user" in case.path_parameters:
            case.path_parameters["user"] = "bob"
    response = case.call(headers={"Authorization": f"Bearer {ALICE_TOKEN}"})
    assert response.status_code < 500, (case.method, case.formatted_path, response.text[:500])
    if response.status_code >= 400 and case.method != "HEAD":
        body = json.loads(response.content)
        assert set(body) == {"error"} and body["error"]["type"] and body["error"]["message"]
    case.validate_response(response, checks=CHECKS)


def test_the_api_conforms_to_its_document(api_schema: Any) -> None:
    """Every operation, with generated parameters, headers and bodies: no 5xx, the envelope on
    every error, and status, content type, headers and body as the document says."""
    operations = [op.ok() for op in api_schema.get_all_operations()]
    # schemathesis leaves out the operation that serves the document itself
    assert {(op.path, op.method.upper()) for op in operations} == set(OPERATIONS) - {("/v2/openapi.json", "GET")}
    for operation in operations:
        strategy: Any = operation.as_strategy()
        run: Any = settings(FUZZ, max_examples=EXAMPLES)(given(strategy)(check))  # type: ignore[no-untyped-call]
        run()


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
