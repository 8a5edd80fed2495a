"""Property tests over every endpoint: any path parameters, query parameters, headers and body
a client can send get an answer below 500, errors come in the Apify envelope, and a refused
request leaves every stored byte, name, grant and setting as it was."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ALICE_TOKEN, BOB_TOKEN
from fuzz.conftest import FUZZ, SCALE, Driven, snapshot
from kvbox.api.routes import ROUTES, Route

EXAMPLES = 40 * SCALE  # per route and backend

# Path parameters: ones that exist, ones that do not, and ones no name or key can be.
STORES = ["~fuzz", "alice~fuzz", "~nope", "bob~fuzz", "AAAAAAAAAAAAAAAAA", "~", "%7Efuzz", "..", "~fuzz%00"]
KEYS = ["a", "k", "INPUT", "a%2Fb", "..", "x" * 257, "%00", "é", "a b", "'()!-_."]
USERS = ["bob", "alice", "nobody", "%00", "b" * 300]
# Values at the edges first: where parsers overflow, recurse or disagree.
EDGES = ["99999999999999999999", "9007199254740992", "²", "-1", "9" * 400, "1_0", "\u0661", " 5", "%00", "\x00", "NaN",
         "1e3", "-0", "9007199254740991", "", "true", "false", "1", "0", "ownedByMe", "sharedWithMe", "READ",
         "RESTRICTED", "a" * 300, "\u202e", "é"]  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(EDGES), st.text(max_size=30), st.integers(min_value=-(2**70), max_value=2**70).map(str)
)
QUERY_NAMES = ["offset", "limit", "desc", "unnamed", "ownership", "name", "exclusiveStartKey", "prefix", "collection",
               "signature", "token", "attachment", "expiresIn", "after", "wait", "x"]  # fmt: skip
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
BODY_FIELDS = ["name", "title", "generalAccess", "schema", "permission", "defaultGeneralAccess"]
JSON_BODIES = st.dictionaries(st.sampled_from(BODY_FIELDS), JSON_VALUES | st.sampled_from(
    ["RESTRICTED", "ANYONE_WITH_ID_CAN_READ", "READ", "MANAGE", "fuzz", {"actorKeyValueStoreSchemaVersion": 1}]),
    max_size=3).map(lambda d: json.dumps(d).encode())  # fmt: skip
BODIES = st.one_of(
    st.sampled_from([5000, 1000, 101, 100, 99]).map(lambda n: b"[" * n + b"]" * n),
    st.sampled_from([5000, 1000, 101]).map(lambda n: b'{"schema":' + b"[" * n + b"]" * n + b"}"),
    st.sampled_from(
        [
            b'{"name": 5}',
            b'{"title": "\\ud800"}',
            b'{"title": "a\\u0000"}',
            b'{"a": NaN}',
            b"{",
            b"\xff\xfe",
            gzip.compress(b"{}") + gzip.compress(b"{}"),
            gzip.compress(b"{}") + b"junk",
            b'{"schema": {"actorKeyValueStoreSchemaVersion": 1, "collections": {"c": {"key": "C", '
            b'"jsonSchema": {"$ref": "#"}}}}}',
        ]
    ),
    JSON_BODIES,
    st.binary(max_size=2048),
    st.binary(max_size=512).map(gzip.compress),
    st.none(),
)
HEADER_VALUES = {
    "content-type": st.sampled_from(["application/json", "text/plain; charset=nope", "application/json; charset=base64",
                                     "x" * 2000, "", "image/png", "application/json; charset=latin-1"]),
    "content-encoding": st.sampled_from(["gzip", "br", "deflate", "identity", "bla", "gzip, br", ""]),
    "accept-encoding": st.sampled_from(["gzip", "br", "identity", "*", "", "gzip;q=0"]),
    "if-none-match": st.sampled_from(["*", '"x"', "W/\"y\", \"z\"", ""]),
    "if-match": st.sampled_from(["*", '"x"', ""]),
    "range": st.sampled_from(["bytes=0-1", "bytes=-5", "bytes=9-1", "bytes=x", "bytes=0-0,2-3"]),
    "authorization": st.sampled_from([f"Bearer {ALICE_TOKEN}", f"Bearer {BOB_TOKEN}", "Bearer", "Basic abc",
                                      "Bearer not-a-token-0123456789", f"bearer  {ALICE_TOKEN} "]),
}  # fmt: skip
METHODS = ["GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH"]


@st.composite
def requests(draw: st.DrawFn, route: Route) -> tuple[str, str, dict[str, str], dict[str, str], bytes | None]:
    """A request to one route: mostly its own methods, sometimes any other."""
    method = draw(st.sampled_from(route.allowed) if draw(st.integers(0, 9)) else st.sampled_from(METHODS))
    values = {"store": st.sampled_from(STORES), "key": st.sampled_from(KEYS), "user": st.sampled_from(USERS)}
    path = route.path
    for name, strategy in values.items():
        path = path.replace("{" + name + "}", draw(strategy))
    query = draw(st.dictionaries(st.sampled_from(QUERY_NAMES), SCALARS, max_size=4))
    headers = {"authorization": f"Bearer {ALICE_TOKEN}"}
    for name in draw(st.lists(st.sampled_from(sorted(HEADER_VALUES)), max_size=2, unique=True)):
        headers[name] = draw(HEADER_VALUES[name])
    body = draw(BODIES) if method in ("PUT", "POST", "PATCH", "DELETE") else None
    if body is not None and draw(st.booleans()):
        query = {}  # a hostile body alone, so no query parameter is refused first
    return method, path, query, headers, body


def check_answer(driven: Driven, method: str, path: str, query: dict[str, str], headers: dict[str, str],
                 body: bytes | None) -> None:  # fmt: skip
    before = driven.run(snapshot(driven.services)) if method not in ("GET", "HEAD", "OPTIONS") else None
    r = driven.run(driven.client.request(method, path, params=query, headers=headers, content=body))
    assert r.status_code < 500, (method, path, query, r.text[:300])
    if r.status_code >= 400 and method != "HEAD":
        assert r.headers["content-type"] == "application/json; charset=utf-8"
        error: Any = r.json()
        assert list(error) == ["error"] and error["error"]["type"] and error["error"]["message"], error
    if before is not None and r.status_code >= 400:
        assert driven.run(snapshot(driven.services)) == before, (method, path, query, r.status_code)


@pytest.mark.parametrize("route", ROUTES, ids=[r.path for r in ROUTES])
def test_no_request_gets_a_5xx_or_changes_anything_when_refused(driven: Driven, route: Route) -> None:
    @settings(FUZZ, max_examples=EXAMPLES)
    @given(request=requests(route))
    def run(request: Any) -> None:
        check_answer(driven, *request)

    run()
