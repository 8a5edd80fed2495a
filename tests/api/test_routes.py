"""The route table: which paths the API owns, and which row answers each path."""

from __future__ import annotations

from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvbox.api.app import owns
from kvbox.api.routes import ROUTES, Bucket, RouteTable


def _segments(raw_path: str) -> list[str]:
    path = raw_path.split("?", 1)[0]
    return [unquote(s) for s in path.strip("/").split("/")] if path.strip("/") else []


@given(st.lists(st.sampled_from(["v2", "health", "v%32", "stores", "", "%2F", "x"]), min_size=0, max_size=4))
def test_the_api_owns_paths_whose_first_segment_is_v2_or_health(parts: list[str]) -> None:
    raw = "/" + "/".join(parts)
    scope = {"path": unquote(raw), "raw_path": raw.encode()}
    assert owns(scope) == (_segments(raw)[:1] in (["v2"], ["health"]))


@pytest.mark.parametrize(
    ("path", "route_path", "arguments"),
    [
        ("/v2/key-value-stores", "/v2/key-value-stores", ()),
        ("/v2/key-value-stores/abc", "/v2/key-value-stores/{store}", ("abc",)),
        ("/v2/key-value-stores/~name/keys", "/v2/key-value-stores/{store}/keys", ("~name",)),
        ("/v2/key-value-stores/abc/records", "/v2/key-value-stores/{store}/records", ("abc",)),
        ("/v2/key-value-stores/abc/records/a%2Fb", "/v2/key-value-stores/{store}/records/{key}", ("abc", "a/b")),
        ("/v2/key-value-stores/abc/grants", "/v2/key-value-stores/{store}/grants", ("abc",)),
        ("/v2/key-value-stores/abc/grants/bob", "/v2/key-value-stores/{store}/grants/{user}", ("abc", "bob")),
        ("/v2/users/me", "/v2/users/me", ()),
        ("/health", "/health", ()),
    ],
)
def test_each_path_finds_its_row(path: str, route_path: str, arguments: tuple[str, ...]) -> None:
    route = RouteTable().match(_segments(path))
    assert route is not None
    assert route.path == route_path
    assert route.arguments(_segments(path)) == arguments


@pytest.mark.parametrize(
    "path",
    ["/v2", "/v2/datasets", "/v2/key-value-stores/a/b", "/v2/key-value-stores/a/records/k/x", "/v2/users/you", "/"],
)
def test_unknown_paths_find_no_row(path: str) -> None:
    assert RouteTable().match(_segments(path)) is None


def test_every_row_is_well_formed() -> None:
    paths = [route.path for route in ROUTES]
    assert len(paths) == len(set(paths))
    for route in ROUTES:
        assert route.handlers, route.path
        assert set(route.allowed) <= {"GET", "HEAD", "POST", "PUT", "DELETE"}
    records = RouteTable().match(["v2", "key-value-stores", "s", "records", "k"])
    assert records is not None and records.bucket is Bucket.RECORDS
