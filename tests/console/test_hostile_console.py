"""Hostile input to the console: odd query parameters and records that break naive parsing
get a page (never a 500), and leave no traceback in the log."""

from __future__ import annotations

import logging

import pytest

from console.conftest import Console

pytestmark = pytest.mark.anyio


async def new_store(console: Console, name: str) -> str:
    r = await console.post("/stores", {"name": name})
    assert r.status_code == 303, r.text
    return r.headers["location"].rsplit("/", 1)[-1]


@pytest.mark.parametrize("value", ["\u00b2", "\u0661", "1_0", "-3", "99999999999999999999999", "9" * 5000, "", "x"])
async def test_page_numbers_that_are_not_plain_integers(
    console: Console, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    await console.sign_in()
    store = await new_store(console, "paged")
    assert (await console.upload(store, "k", b"v", "text/plain")).status_code == 201
    for url in (f"/stores/{store}", "/stores"):
        r = await console.get(url, params={"page": value, "per_page": value})
        assert r.status_code == 200, (url, r.text[:300])
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("body", "shown"),
    [
        (b"[" * 50_000 + b"]" * 50_000, "nested deeper than"),  # past Python's recursion limit
        (b'{"a":' * 150 + b"1" + b"}" * 150, "nested deeper than"),  # parses, but too deep to show as a tree
        (b'{"x": NaN}', "not a JSON number"),
    ],
)
async def test_json_preview_of_hostile_records(
    console: Console, body: bytes, shown: str, caplog: pytest.LogCaptureFixture
) -> None:
    await console.sign_in()
    store = await new_store(console, "deep")
    assert (await console.upload(store, "doc", body, "application/json")).status_code == 201
    page = await console.get(f"/stores/{store}/records/doc")
    assert page.status_code == 200
    assert shown in page.text and "shown as text" in page.text
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
