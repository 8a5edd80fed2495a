"""Store endpoints over HTTP: list, get-or-create, get, update, delete, access rules."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import brotli
import httpx
import pytest

from conftest import ALICE_TOKEN, BOB_TOKEN, Api
from kvbox.core.clock import FakeClock
from kvbox.core.models import GeneralAccess
from kvbox.service.container import Services

pytestmark = pytest.mark.anyio

STORES = "/v2/key-value-stores"
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
FORBIDDEN = (
    "Insufficient permissions for the key-value store. Make sure you're passing a correct API token "
    "and that it has the required permissions."
)
SCHEMA = {
    "actorKeyValueStoreSchemaVersion": 1,
    "title": "Screenshots",
    "collections": {"shots": {"title": "Shots", "keyPrefix": "shot-", "contentTypes": ["image/png"]}},
}


def assert_error(r: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = r.json()["error"]
    assert error["type"] == type_
    assert isinstance(error["message"], str) and error["message"]
    return error


async def get_store(api: Api, segment: str, token: str | None = ALICE_TOKEN) -> httpx.Response:
    return await api.client.get(f"{STORES}/{segment}", headers=api.auth(token))


async def list_stores(api: Api, token: str | None = ALICE_TOKEN, **params: Any) -> httpx.Response:
    return await api.client.get(STORES, params=params, headers=api.auth(token))


async def update(api: Api, segment: str, body: dict[str, Any], token: str | None = ALICE_TOKEN) -> httpx.Response:
    return await api.client.put(f"{STORES}/{segment}", json=body, headers=api.auth(token))


async def set_access(api: Api, store_id: str, access: str) -> None:
    r = await update(api, store_id, {"generalAccess": access})
    assert r.status_code == 200, r.text


# --- list -------------------------------------------------------------------------------


async def test_list_pages_through_named_stores_in_creation_order(api: Api, clock: FakeClock) -> None:
    names = [f"store-{i}" for i in range(5)]
    for name in names:
        await api.create_store(name)
        clock.advance(seconds=1)
    await api.create_store()  # unnamed: not listed by default
    await api.create_store("bobs", token=BOB_TOKEN)  # someone else's: never listed

    r = await list_stores(api)
    assert r.status_code == 200
    data = r.json()["data"]
    assert [s["name"] for s in data["items"]] == names
    assert {k: data[k] for k in ("total", "offset", "limit", "count", "desc", "unnamed")} == {
        "total": 5,
        "offset": 0,
        "limit": 1000,
        "count": 5,
        "desc": False,
        "unnamed": False,
    }

    page = (await list_stores(api, offset=1, limit=2)).json()["data"]
    assert [s["name"] for s in page["items"]] == names[1:3]
    assert (page["total"], page["offset"], page["limit"], page["count"]) == (5, 1, 2, 2)

    page = (await list_stores(api, desc="true", limit=2)).json()["data"]
    assert [s["name"] for s in page["items"]] == names[::-1][:2]
    assert page["desc"] is True

    past_end = (await list_stores(api, offset=10)).json()["data"]
    assert (past_end["items"], past_end["count"], past_end["total"]) == ([], 0, 5)


async def test_list_includes_unnamed_stores_on_request(api: Api) -> None:
    named = await api.create_store("named")
    unnamed = await api.create_store()
    data = (await list_stores(api, unnamed="1")).json()["data"]
    assert [s["id"] for s in data["items"]] == [named["id"], unnamed["id"]]
    assert data["unnamed"] is True
    assert data["items"][1]["name"] is None


async def test_list_ownership_filter(api: Api) -> None:
    await api.create_store("mine")
    await api.create_store("theirs", token=BOB_TOKEN)
    owned = (await list_stores(api, ownership="ownedByMe")).json()["data"]
    assert [s["name"] for s in owned["items"]] == ["mine"]
    shared = (await list_stores(api, ownership="sharedWithMe")).json()["data"]
    assert shared["items"] == [] and shared["total"] == 0


@pytest.mark.parametrize(
    ("requested", "effective"), [("0", 1000), ("", 1000), ("1", 1), ("1000", 1000), ("1001", 1000), ("99999999", 1000)]
)
async def test_list_limit_defaults_and_clamps(api: Api, requested: str, effective: int) -> None:
    r = await list_stores(api, limit=requested)
    assert r.status_code == 200
    assert r.json()["data"]["limit"] == effective


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "-1"},
        {"limit": "ten"},
        {"offset": "-5"},
        {"offset": "1.5"},
        {"desc": "maybe"},
        {"unnamed": "yes please"},
        {"ownership": "everyone"},
    ],
)
async def test_list_rejects_bad_parameters(api: Api, params: dict[str, str]) -> None:
    assert_error(await list_stores(api, **params), 400, "invalid-parameter")


# --- get-or-create ----------------------------------------------------------------------


async def test_create_named_then_get_existing(api: Api) -> None:
    r = await api.client.post(STORES, params={"name": "results"}, json={}, headers=api.auth())
    assert r.status_code == 201
    store = r.json()["data"]
    assert r.headers["location"] == f"http://kvbox.test/v2/key-value-stores/{store['id']}"
    assert store["name"] == "results"

    again = await api.client.post(STORES, params={"name": "results"}, json={}, headers=api.auth())
    assert again.status_code == 200
    assert "location" not in again.headers
    assert again.json()["data"]["id"] == store["id"]

    bobs = await api.client.post(STORES, params={"name": "results"}, json={}, headers=api.auth(BOB_TOKEN))
    assert bobs.status_code == 201  # names are per owner
    assert bobs.json()["data"]["id"] != store["id"]


async def test_names_are_case_sensitive(api: Api) -> None:
    upper = await api.create_store("Data")
    lower = await api.create_store("data")
    assert upper["id"] != lower["id"]
    assert (await get_store(api, "~Data")).json()["data"]["id"] == upper["id"]


async def test_unnamed_create_always_makes_a_new_store(api: Api) -> None:
    first, second = await api.create_store(), await api.create_store()
    assert first["id"] != second["id"]
    assert first["name"] is None and second["name"] is None
    assert re.fullmatch(r"[A-Za-z0-9]{17}", first["id"])


async def test_create_with_schema(api: Api) -> None:
    r = await api.client.post(STORES, params={"name": "shots"}, json={"schema": SCHEMA}, headers=api.auth())
    assert r.status_code == 201
    assert r.json()["data"]["schema"] == SCHEMA
    assert (await get_store(api, "~shots")).json()["data"]["schema"] == SCHEMA


async def test_create_rejects_an_invalid_schema(api: Api) -> None:
    bad = {"actorKeyValueStoreSchemaVersion": 1, "collections": {"x": {"title": "no key or prefix"}}}
    r = await api.client.post(STORES, json={"schema": bad}, headers=api.auth())
    assert_error(r, 400, "store-schema-invalid")


async def test_create_accepts_an_empty_form_encoded_body(api: Api) -> None:
    # The JS client's get-or-create sends exactly this.
    headers = {**api.auth(), "content-type": "application/x-www-form-urlencoded"}
    r = await api.client.post(STORES, params={"name": "from-js"}, content=b"", headers=headers)
    assert r.status_code == 201
    assert r.json()["data"]["name"] == "from-js"


@pytest.mark.parametrize(("encoding", "compress"), [("gzip", gzip.compress), ("br", brotli.compress)])
async def test_create_accepts_a_compressed_json_body(api: Api, encoding: str, compress: Any) -> None:
    body = compress(json.dumps({"schema": SCHEMA}).encode())
    headers = {**api.auth(), "content-type": "application/json", "content-encoding": encoding}
    r = await api.client.post(STORES, params={"name": "packed"}, content=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["data"]["schema"] == SCHEMA


@pytest.mark.parametrize("body", [b"[1, 2]", b'"store"', b"42", b"null", b"{not json"])
async def test_create_rejects_a_body_that_is_not_a_json_object(api: Api, body: bytes) -> None:
    headers = {**api.auth(), "content-type": "application/json"}
    error = assert_error(await api.client.post(STORES, content=body, headers=headers), 400, "invalid-request")
    if body.startswith(b"["):
        assert error["message"] == "POST data must be a JSON object"


@pytest.mark.parametrize("name", ["bad_name", "-leading", "trailing-", "x" * 64, "a~b"])
async def test_create_rejects_an_invalid_name(api: Api, name: str) -> None:
    r = await api.client.post(STORES, params={"name": name}, json={}, headers=api.auth())
    assert_error(r, 400, "invalid-value")


# --- get by id or name --------------------------------------------------------------------


@pytest.mark.parametrize("form", ["{id}", "~{name}", "alice~{name}", "%7E{name}", "alice%7E{name}"])
async def test_get_by_id_or_name(api: Api, form: str) -> None:
    store = await api.create_store("lookup")
    r = await get_store(api, form.format(id=store["id"], name="lookup"))
    assert r.status_code == 200, r.text
    assert r.json()["data"]["id"] == store["id"]


@pytest.mark.parametrize("segment", ["AAAAAAAAAAAAAAAAA", "~nope", "alice~nope", "nobody~lookup"])
async def test_get_missing_store_is_404(api: Api, segment: str) -> None:
    await api.create_store("lookup")
    assert_error(await get_store(api, segment), 404, "record-not-found")


# --- store object -------------------------------------------------------------------------


async def test_store_object_has_every_contract_field(api: Api, services: Services) -> None:
    store = await api.create_store("fields")
    data = (await get_store(api, store["id"])).json()["data"]
    alice = await services.users.find_user("alice")
    base = f"http://kvbox.test/v2/key-value-stores/{store['id']}"
    assert data["id"] == store["id"]
    assert data["name"] == "fields"
    assert (data["userId"], data["username"]) == (alice.id, "alice")
    for field in ("createdAt", "modifiedAt", "accessedAt"):
        assert ISO_MS.match(data[field]), data[field]
    assert (data["actId"], data["actRunId"], data["schema"]) == (None, None, None)
    assert data["consoleUrl"].startswith("http://kvbox.test/")
    assert data["keysPublicUrl"].startswith(f"{base}/keys?signature=")
    assert data["recordsPublicUrl"].startswith(f"{base}/records")
    assert data["generalAccess"] == "FOLLOW_USER_SETTING"
    assert isinstance(data["urlSigningSecretKey"], str) and data["urlSigningSecretKey"]
    assert data["stats"] == {
        "readCount": 0,
        "writeCount": 0,
        "deleteCount": 0,
        "listCount": 0,
        "storageBytes": 0,
        "s3StorageBytes": 0,
    }


async def test_signing_secret_and_signed_urls_only_for_the_owner(api: Api) -> None:
    store = await api.create_store("shared")
    await set_access(api, store["id"], "ANYONE_WITH_ID_CAN_READ")
    for token in (BOB_TOKEN, None):
        data = (await get_store(api, store["id"], token)).json()["data"]
        assert data["urlSigningSecretKey"] is None
        assert "signature" not in data["keysPublicUrl"]
        assert "signature" not in data["recordsPublicUrl"]
    listed = (await list_stores(api)).json()["data"]["items"][0]
    assert listed["urlSigningSecretKey"] == store["urlSigningSecretKey"]


async def test_stats_and_timestamps_follow_operations(api: Api, clock: FakeClock) -> None:
    store = await api.create_store("counted")
    sid = store["id"]
    records = f"{STORES}/{sid}/records"
    created = store["createdAt"]

    clock.advance(seconds=5)
    for key in ("a", "b"):
        assert (await api.client.put(f"{records}/{key}", content=b"12345", headers=api.auth())).status_code == 201
    await api.client.get(f"{records}/a", headers=api.auth())
    await api.client.get(f"{records}/a", headers=api.auth())
    await api.client.get(f"{STORES}/{sid}/keys", headers=api.auth())
    await api.client.delete(f"{records}/b", headers=api.auth())
    await api.client.delete(f"{records}/never-existed", headers=api.auth())

    data = (await get_store(api, sid)).json()["data"]
    assert data["stats"] == {
        "readCount": 2,
        "writeCount": 2,
        "deleteCount": 2,
        "listCount": 1,
        "storageBytes": 5,
        "s3StorageBytes": 5,
    }
    assert data["createdAt"] == created
    assert data["modifiedAt"] > created
    assert data["accessedAt"] >= data["modifiedAt"]

    clock.advance(seconds=5)
    assert (await api.client.head(f"{records}/a", headers=api.auth())).status_code == 200
    after = (await get_store(api, sid)).json()["data"]
    assert after["stats"]["readCount"] == 2  # HEAD is not counted as a read
    assert after["accessedAt"] > data["accessedAt"]  # but any access moves accessedAt
    assert after["modifiedAt"] == data["modifiedAt"]


# --- update ---------------------------------------------------------------------------------


async def test_rename_and_unname(api: Api, clock: FakeClock) -> None:
    store = await api.create_store()
    clock.advance(seconds=1)
    r = await update(api, store["id"], {"name": "renamed"})
    assert r.status_code == 200
    assert r.json()["data"]["name"] == "renamed"
    assert r.json()["data"]["modifiedAt"] > store["modifiedAt"]
    assert (await get_store(api, "~renamed")).json()["data"]["id"] == store["id"]
    assert [s["id"] for s in (await list_stores(api)).json()["data"]["items"]] == [store["id"]]

    r = await update(api, "~renamed", {"name": None})
    assert r.status_code == 200
    assert r.json()["data"]["name"] is None
    assert_error(await get_store(api, "~renamed"), 404, "record-not-found")
    assert (await list_stores(api)).json()["data"]["items"] == []


async def test_empty_update_is_a_no_op(api: Api) -> None:
    store = await api.create_store("same")
    r = await update(api, store["id"], {})
    assert r.status_code == 200
    assert (r.json()["data"]["name"], r.json()["data"]["generalAccess"]) == ("same", "FOLLOW_USER_SETTING")


async def test_rename_to_a_taken_name_is_refused(api: Api) -> None:
    await api.create_store("taken")
    other = await api.create_store("other")
    assert_error(await update(api, other["id"], {"name": "taken"}), 400, "name-not-unique")
    assert (await get_store(api, other["id"])).json()["data"]["name"] == "other"
    # Renaming a store to its own name is fine.
    assert (await update(api, other["id"], {"name": "other"})).status_code == 200


@pytest.mark.parametrize(
    ("name", "type_"),
    [
        ("bad name", "invalid-value"),
        ("x" * 64, "invalid-value"),
        ("-x", "invalid-value"),
        ("", "invalid-value"),
        (42, "invalid-value"),
    ],
)
async def test_rename_to_an_invalid_name_is_refused(api: Api, name: Any, type_: str) -> None:
    store = await api.create_store("valid")
    assert_error(await update(api, store["id"], {"name": name}), 400, type_)
    assert (await get_store(api, store["id"])).json()["data"]["name"] == "valid"


@pytest.mark.parametrize("access", [a.value for a in GeneralAccess])
async def test_general_access_values(api: Api, access: str) -> None:
    store = await api.create_store("access")
    r = await update(api, store["id"], {"generalAccess": access})
    assert r.status_code == 200
    assert r.json()["data"]["generalAccess"] == access
    assert (await get_store(api, store["id"])).json()["data"]["generalAccess"] == access


@pytest.mark.parametrize(
    ("access", "type_"), [("PUBLIC", "invalid-value"), ("restricted", "invalid-value"), (1, "invalid-value")]
)
async def test_invalid_general_access_is_refused(api: Api, access: Any, type_: str) -> None:
    store = await api.create_store("access")
    assert_error(await update(api, store["id"], {"generalAccess": access}), 400, type_)
    assert (await get_store(api, store["id"])).json()["data"]["generalAccess"] == "FOLLOW_USER_SETTING"


async def test_update_accepts_a_gzip_body(api: Api) -> None:
    store = await api.create_store("zipped")
    headers = {**api.auth(), "content-type": "application/json", "content-encoding": "gzip"}
    body = gzip.compress(json.dumps({"name": "unzipped"}).encode())
    r = await api.client.put(f"{STORES}/{store['id']}", content=body, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["name"] == "unzipped"


# --- delete --------------------------------------------------------------------------------


async def test_delete_store(api: Api) -> None:
    store = await api.create_store("doomed")
    record = f"{STORES}/{store['id']}/records/k"
    await api.client.put(record, content=b"v" * 5000, headers=api.auth())

    r = await api.client.delete(f"{STORES}/{store['id']}", headers=api.auth())
    assert r.status_code == 204
    assert r.content == b""
    assert_error(await get_store(api, store["id"]), 404, "record-not-found")
    assert_error(await api.client.get(record, headers=api.auth()), 404, "record-not-found")
    assert_error(await api.client.delete(f"{STORES}/{store['id']}", headers=api.auth()), 404, "record-not-found")

    reborn = await api.create_store("doomed")
    assert reborn["id"] != store["id"]
    keys = (await api.client.get(f"{STORES}/{reborn['id']}/keys", headers=api.auth())).json()["data"]
    assert keys["items"] == []


# --- authentication and access ------------------------------------------------------------


async def test_token_required_for_list_create_and_writes(api: Api) -> None:
    store = await api.create_store("mine")
    sid = store["id"]
    calls = [
        api.client.get(STORES),
        api.client.post(STORES, json={}),
        api.client.put(f"{STORES}/{sid}", json={"name": "x"}),
        api.client.delete(f"{STORES}/{sid}"),
        api.client.put(f"{STORES}/{sid}/records/k", content=b"v"),
        api.client.post(f"{STORES}/{sid}/records/k", content=b"v"),
        api.client.delete(f"{STORES}/{sid}/records/k"),
        api.client.get(f"{STORES}/~mine"),
    ]
    for call in calls:
        error = assert_error(await call, 401, "token-not-provided")
        assert error["message"] == "Authentication token was not provided"


async def test_bad_token_is_401_even_where_no_token_is_needed(api: Api) -> None:
    store = await api.create_store("open")
    await set_access(api, store["id"], "ANYONE_WITH_ID_CAN_READ")
    for headers, params in [
        ({"Authorization": "Bearer nope-nope-nope-nope"}, {}),
        ({"Authorization": "Basic YWxpY2U6cHc="}, {}),
        ({}, {"token": "nope-nope-nope-nope"}),
    ]:
        r = await api.client.get(f"{STORES}/{store['id']}", headers=headers, params=params)
        assert_error(r, 401, "invalid-token")
    assert (await api.client.get(f"{STORES}/{store['id']}")).status_code == 200


async def test_token_in_query_and_header_precedence(api: Api) -> None:
    store = await api.create_store("q")
    assert (await api.client.get(f"{STORES}/{store['id']}", params={"token": ALICE_TOKEN})).status_code == 200
    # The Authorization header wins over ?token=.
    r = await api.client.get(f"{STORES}/{store['id']}", params={"token": "garbage-garbage"}, headers=api.auth())
    assert r.status_code == 200
    r = await api.client.get(f"{STORES}/{store['id']}", params={"token": ALICE_TOKEN}, headers=api.auth(BOB_TOKEN))
    assert_error(r, 403, "insufficient-permissions")


async def test_another_users_restricted_store_is_403(api: Api) -> None:
    store = await api.create_store("private")
    await set_access(api, store["id"], "RESTRICTED")
    sid = store["id"]
    for r in [
        await get_store(api, sid, BOB_TOKEN),
        await get_store(api, "alice~private", BOB_TOKEN),
        await api.client.get(f"{STORES}/{sid}/keys", headers=api.auth(BOB_TOKEN)),
        await api.client.get(f"{STORES}/{sid}/records/k", headers=api.auth(BOB_TOKEN)),
        await update(api, sid, {"name": "mine-now"}, BOB_TOKEN),
        await api.client.delete(f"{STORES}/{sid}", headers=api.auth(BOB_TOKEN)),
        await get_store(api, sid, None),  # anonymous read of a restricted store: 403 too
    ]:
        assert assert_error(r, 403, "insufficient-permissions")["message"] == FORBIDDEN


async def test_anyone_with_id_can_read_by_id_but_not_by_name(api: Api) -> None:
    store = await api.create_store("by-id")
    await set_access(api, store["id"], "ANYONE_WITH_ID_CAN_READ")
    assert (await get_store(api, store["id"], None)).status_code == 200
    assert (await get_store(api, store["id"], BOB_TOKEN)).status_code == 200
    assert_error(await get_store(api, "alice~by-id", None), 403, "insufficient-permissions")
    assert_error(await get_store(api, "alice~by-id", BOB_TOKEN), 403, "insufficient-permissions")
    # Reading never extends to writing.
    r = await api.client.put(f"{STORES}/{store['id']}/records/k", content=b"v", headers=api.auth(BOB_TOKEN))
    assert_error(r, 403, "insufficient-permissions")


async def test_anyone_with_name_can_read_by_name(api: Api) -> None:
    store = await api.create_store("by-name")
    await set_access(api, store["id"], "ANYONE_WITH_NAME_CAN_READ")
    for segment in (store["id"], "alice~by-name"):
        for token in (None, BOB_TOKEN):
            r = await get_store(api, segment, token)
            assert r.status_code == 200, (segment, token)
            assert r.json()["data"]["id"] == store["id"]


async def test_follow_user_setting_follows_the_owner_default(api: Api, services: Services) -> None:
    store = await api.create_store("follows")
    assert store["generalAccess"] == "FOLLOW_USER_SETTING"
    assert_error(await get_store(api, store["id"], None), 403, "insufficient-permissions")

    await services.users.set_default_access("alice", GeneralAccess.ANYONE_WITH_ID_CAN_READ)
    assert (await get_store(api, store["id"], None)).status_code == 200
    assert (await get_store(api, store["id"], BOB_TOKEN)).status_code == 200

    # A store's own setting overrides the account's.
    await set_access(api, store["id"], "RESTRICTED")
    assert_error(await get_store(api, store["id"], None), 403, "insufficient-permissions")

    await set_access(api, store["id"], "FOLLOW_USER_SETTING")
    await services.users.set_default_access("alice", GeneralAccess.RESTRICTED)
    assert_error(await get_store(api, store["id"], BOB_TOKEN), 403, "insufficient-permissions")
