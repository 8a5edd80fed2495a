"""Sharing over HTTP: grants, listings by ownership, scoped tokens and `/v2/users/me`.

Who may call which endpoint under which general access is the authorization matrix's job;
here are the flows: a grant given, changed and revoked, what each listing returns, and how
a user's default general access reaches their stores.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from conftest import ALICE_TOKEN, BOB_TOKEN, Api
from kvbox.core.clock import FakeClock
from kvbox.service.container import Services

pytestmark = pytest.mark.anyio

STORES = "/v2/key-value-stores"
ME = "/v2/users/me"
CAROL_TOKEN = "carol-token-0123456789"
ISO_MS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def assert_error(r: httpx.Response, status: int, type_: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert error["type"] == type_
    assert isinstance(error["message"], str) and error["message"]
    return error


async def share(api: Api, store: str, user: str, permission: Any, token: str | None = ALICE_TOKEN) -> httpx.Response:
    return await api.client.put(
        f"{STORES}/{store}/grants/{user}", json={"permission": permission}, headers=api.auth(token)
    )


async def unshare(api: Api, store: str, user: str, token: str | None = ALICE_TOKEN) -> httpx.Response:
    return await api.client.delete(f"{STORES}/{store}/grants/{user}", headers=api.auth(token))


async def grants(api: Api, store: str, token: str | None = ALICE_TOKEN) -> httpx.Response:
    return await api.client.get(f"{STORES}/{store}/grants", headers=api.auth(token))


async def get_store(api: Api, segment: str, token: str | None = ALICE_TOKEN) -> httpx.Response:
    return await api.client.get(f"{STORES}/{segment}", headers=api.auth(token))


async def put_record(api: Api, segment: str, key: str, token: str | None = ALICE_TOKEN) -> httpx.Response:
    return await api.client.put(
        f"{STORES}/{segment}/records/{key}", content=b"value", headers={**api.auth(token), "Content-Type": "text/plain"}
    )


async def listing(api: Api, token: str | None = ALICE_TOKEN, **params: Any) -> dict[str, Any]:
    r = await api.client.get(STORES, params=params, headers=api.auth(token))
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()["data"]
    assert data["count"] == len(data["items"])
    return data


def ids(data: dict[str, Any]) -> list[str]:
    return [item["id"] for item in data["items"]]


async def user_id(services: Services, name: str) -> str:
    return (await services.users.find_user(name)).id


# --- grant, list, change, revoke -----------------------------------------------------------


async def test_grant_change_and_revoke(api: Api, services: Services, clock: FakeClock) -> None:
    store = await api.create_store("team")
    sid = store["id"]
    bob_id = await user_id(services, "bob")
    assert_error(await get_store(api, sid, BOB_TOKEN), 403, "insufficient-permissions")

    r = await share(api, sid, "bob", "READ")
    assert r.status_code == 200, r.text
    granted = r.json()["data"]
    assert {k: granted[k] for k in ("userId", "username", "permission")} == {
        "userId": bob_id,
        "username": "bob",
        "permission": "READ",
    }
    assert ISO_MS.match(granted["createdAt"])
    listed = (await grants(api, sid)).json()["data"]
    assert (listed["total"], listed["count"]) == (1, 1)
    assert listed["items"] == [granted]

    # READ: bob reads but may not write.
    assert (await get_store(api, sid, BOB_TOKEN)).status_code == 200
    assert_error(await put_record(api, sid, "k", BOB_TOKEN), 403, "insufficient-permissions")

    # Changing the permission keeps the grant's creation time.
    clock.advance(seconds=10)
    r = await share(api, sid, bob_id, "WRITE")  # by user ID this time
    assert r.status_code == 200, r.text
    assert r.json()["data"]["permission"] == "WRITE"
    assert r.json()["data"]["createdAt"] == granted["createdAt"]
    assert [g["permission"] for g in (await grants(api, sid)).json()["data"]["items"]] == ["WRITE"]
    assert (await put_record(api, sid, "k", BOB_TOKEN)).status_code == 201

    # Revoking takes effect on the very next request.
    r = await unshare(api, sid, "bob")
    assert r.status_code == 204
    assert r.content == b""
    assert (await grants(api, sid)).json()["data"] == {"total": 0, "count": 0, "items": []}
    assert_error(await get_store(api, sid, BOB_TOKEN), 403, "insufficient-permissions")
    assert_error(await put_record(api, sid, "k2", BOB_TOKEN), 403, "insufficient-permissions")
    # Revoking again: nothing to revoke.
    assert_error(await unshare(api, sid, "bob"), 404, "user-or-token-not-found")


async def test_grants_are_listed_for_every_user(api: Api, services: Services, clock: FakeClock) -> None:
    await services.users.create_user("carol", token=CAROL_TOKEN)
    store = await api.create_store("many")
    assert (await share(api, store["id"], "bob", "read")).status_code == 200
    clock.advance(seconds=1)
    assert (await share(api, store["id"], "carol", "MANAGE")).status_code == 200
    data = (await grants(api, "~many")).json()["data"]
    assert data["total"] == 2
    assert [(g["username"], g["permission"]) for g in data["items"]] == [("bob", "READ"), ("carol", "MANAGE")]


async def test_a_manage_grantee_can_share_and_unshare(api: Api, services: Services) -> None:
    await services.users.create_user("carol", token=CAROL_TOKEN)
    store = await api.create_store("delegated")
    assert (await share(api, store["id"], "bob", "MANAGE")).status_code == 200
    assert (await share(api, "alice~delegated", "carol", "READ", BOB_TOKEN)).status_code == 200
    assert (await get_store(api, store["id"], CAROL_TOKEN)).status_code == 200
    # Even a MANAGE grantee cannot make a grant to the owner.
    assert_error(await share(api, store["id"], "alice", "READ", BOB_TOKEN), 400, "invalid-value")
    assert (await unshare(api, store["id"], "carol", BOB_TOKEN)).status_code == 204
    assert_error(await get_store(api, store["id"], CAROL_TOKEN), 403, "insufficient-permissions")


# --- errors -------------------------------------------------------------------------------


async def test_granting_to_an_unknown_user_is_404(api: Api) -> None:
    store = await api.create_store("errs")
    error = assert_error(await share(api, store["id"], "nobody", "READ"), 404, "user-or-token-not-found")
    assert "nobody" in error["message"]
    assert_error(await unshare(api, store["id"], "nobody"), 404, "user-or-token-not-found")
    assert (await grants(api, store["id"])).json()["data"]["total"] == 0


@pytest.mark.parametrize("permission", ["ADMIN", "NONE", "", None, 2, ["READ"]])
async def test_invalid_permission_is_400(api: Api, permission: Any) -> None:
    store = await api.create_store("errs")
    error = assert_error(await share(api, store["id"], "bob", permission), 400, "invalid-value")
    assert "READ" in error["message"]
    assert (await grants(api, store["id"])).json()["data"]["total"] == 0


async def test_grant_body_must_be_a_json_object(api: Api) -> None:
    store = await api.create_store("errs")
    r = await api.client.put(f"{STORES}/{store['id']}/grants/bob", content=b"[1]", headers=api.auth())
    assert_error(r, 400, "invalid-request")
    r = await api.client.put(f"{STORES}/{store['id']}/grants/bob", headers=api.auth())  # empty body: no permission
    assert_error(r, 400, "invalid-value")


async def test_granting_to_the_owner_is_400(api: Api, services: Services) -> None:
    store = await api.create_store("mine")
    for ref in ("alice", await user_id(services, "alice")):
        assert_error(await share(api, store["id"], ref, "READ"), 400, "invalid-value")
    assert (await grants(api, store["id"])).json()["data"]["total"] == 0


async def test_only_managers_may_share(api: Api, services: Services) -> None:
    await services.users.create_user("carol", token=CAROL_TOKEN)
    store = await api.create_store("guarded")
    assert (await share(api, store["id"], "bob", "WRITE")).status_code == 200
    assert_error(await share(api, store["id"], "carol", "READ", BOB_TOKEN), 403, "insufficient-permissions")
    assert_error(await share(api, store["id"], "bob", "MANAGE", BOB_TOKEN), 403, "insufficient-permissions")
    assert_error(await share(api, store["id"], "carol", "READ", None), 401, "token-not-provided")
    assert [g["username"] for g in (await grants(api, store["id"])).json()["data"]["items"]] == ["bob"]
    assert (await grants(api, store["id"])).json()["data"]["items"][0]["permission"] == "WRITE"


async def test_grants_of_a_missing_store_are_404(api: Api) -> None:
    assert_error(await grants(api, "no-such-store-id"), 404, "record-not-found")
    assert_error(await share(api, "~missing", "bob", "READ"), 404, "record-not-found")


# --- listings by ownership ------------------------------------------------------------------


async def test_listing_by_ownership(api: Api, services: Services, clock: FakeClock) -> None:
    await services.users.create_user("carol", token=CAROL_TOKEN)
    mine = await api.create_store("a-mine")
    clock.advance(ms=1)
    mine_unnamed = await api.create_store()
    clock.advance(ms=1)
    shared = await api.create_store("b-shared", token=BOB_TOKEN)
    clock.advance(ms=1)
    await api.create_store("b-private", token=BOB_TOKEN)
    clock.advance(ms=1)
    shared_unnamed = await api.create_store(token=BOB_TOKEN)
    clock.advance(ms=1)
    carols = await api.create_store("c-shared", token=CAROL_TOKEN)
    assert (await share(api, shared["id"], "alice", "READ", BOB_TOKEN)).status_code == 200
    assert (await share(api, shared_unnamed["id"], "alice", "WRITE", BOB_TOKEN)).status_code == 200
    assert (await share(api, carols["id"], "bob", "READ", CAROL_TOKEN)).status_code == 200  # not alice's business

    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({}, [mine["id"], shared["id"]]),
        ({"unnamed": "1"}, [mine["id"], mine_unnamed["id"], shared["id"], shared_unnamed["id"]]),
        ({"ownership": "ownedByMe"}, [mine["id"]]),
        ({"ownership": "ownedByMe", "unnamed": "1"}, [mine["id"], mine_unnamed["id"]]),
        ({"ownership": "sharedWithMe"}, [shared["id"]]),
        ({"ownership": "sharedWithMe", "unnamed": "1"}, [shared["id"], shared_unnamed["id"]]),
        ({"unnamed": "1", "desc": "1"}, [shared_unnamed["id"], shared["id"], mine_unnamed["id"], mine["id"]]),
    ]
    for params, want in cases:
        data = await listing(api, **params)
        assert ids(data) == want, params
        assert data["total"] == len(want), params

    # `total` counts every match, not just the page.
    page = await listing(api, unnamed="1", offset="1", limit="2")
    assert ids(page) == [mine_unnamed["id"], shared["id"]]
    assert (page["total"], page["count"]) == (4, 2)

    # A shared store shows its owner, and the caller's own permission decides the secret.
    item = (await listing(api, ownership="sharedWithMe"))["items"][0]
    assert (item["username"], item["userId"]) == ("bob", await user_id(services, "bob"))
    assert item["urlSigningSecretKey"] is None

    # Bob sees his own stores and carol's shared one, never alice's.
    bobs = await listing(api, BOB_TOKEN, unnamed="1")
    assert {i["name"] for i in bobs["items"]} == {"b-shared", "b-private", None, "c-shared"}
    assert bobs["total"] == 4


async def test_shared_store_by_owner_name(api: Api, services: Services) -> None:
    store = await api.create_store("team")
    assert_error(await get_store(api, "alice~team", BOB_TOKEN), 403, "insufficient-permissions")
    assert (await share(api, "~team", "bob", "WRITE")).status_code == 200

    r = await get_store(api, "alice~team", BOB_TOKEN)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["id"] == store["id"]
    alice_id = await user_id(services, "alice")
    assert (await get_store(api, f"{alice_id}~team", BOB_TOKEN)).json()["data"]["id"] == store["id"]
    assert (await put_record(api, "alice~team", "from-bob", BOB_TOKEN)).status_code == 201
    got = await api.client.get(f"{STORES}/alice~team/records/from-bob", headers=api.auth(BOB_TOKEN))
    assert (got.status_code, got.content) == (200, b"value")
    # `~team` is bob's own namespace: he has no store of that name.
    assert_error(await get_store(api, "~team", BOB_TOKEN), 404, "record-not-found")

    assert (await unshare(api, "alice~team", "bob")).status_code == 204
    assert_error(await get_store(api, "alice~team", BOB_TOKEN), 403, "insufficient-permissions")


async def test_deleting_a_store_removes_its_grants(api: Api, services: Services) -> None:
    store = await api.create_store("doomed")
    assert (await share(api, store["id"], "bob", "MANAGE")).status_code == 200
    assert ids(await listing(api, BOB_TOKEN, ownership="sharedWithMe")) == [store["id"]]

    assert (await api.client.delete(f"{STORES}/{store['id']}", headers=api.auth())).status_code == 204
    assert await services.index.list_grants(store["id"]) == []
    shared = await listing(api, BOB_TOKEN, ownership="sharedWithMe", unnamed="1")
    assert (shared["items"], shared["total"]) == ([], 0)
    assert_error(await get_store(api, store["id"], BOB_TOKEN), 404, "record-not-found")

    # A new store under the same name starts unshared.
    again = await api.create_store("doomed")
    assert again["id"] != store["id"]
    assert (await grants(api, again["id"])).json()["data"]["total"] == 0
    assert_error(await get_store(api, "alice~doomed", BOB_TOKEN), 403, "insufficient-permissions")


async def test_signing_secret_only_for_write_grantees(api: Api) -> None:
    store = await api.create_store("secrets")
    sid = store["id"]
    secret = store["urlSigningSecretKey"]
    assert secret

    assert (await share(api, sid, "bob", "READ")).status_code == 200
    seen = (await get_store(api, sid, BOB_TOKEN)).json()["data"]
    assert seen["urlSigningSecretKey"] is None
    assert "signature=" not in seen["keysPublicUrl"]
    assert (await listing(api, BOB_TOKEN))["items"][0]["urlSigningSecretKey"] is None

    assert (await share(api, sid, "bob", "WRITE")).status_code == 200
    seen = (await get_store(api, sid, BOB_TOKEN)).json()["data"]
    assert seen["urlSigningSecretKey"] == secret
    assert "signature=" in seen["keysPublicUrl"]
    assert (await listing(api, BOB_TOKEN))["items"][0]["urlSigningSecretKey"] == secret


# --- scoped tokens ------------------------------------------------------------------------


async def test_store_scoped_token_lists_only_its_stores(api: Api, services: Services, clock: FakeClock) -> None:
    first = await api.create_store("first")
    clock.advance(ms=1)
    await api.create_store("second")
    clock.advance(ms=1)
    unnamed = await api.create_store()
    clock.advance(ms=1)
    bobs_shared = await api.create_store("bobs-shared", token=BOB_TOKEN)
    bobs_private = await api.create_store("bobs-private", token=BOB_TOKEN)
    assert (await share(api, bobs_shared["id"], "alice", "READ", BOB_TOKEN)).status_code == 200
    scoped = await services.users.create_token(
        "alice", store_ids=(first["id"], unnamed["id"], bobs_shared["id"], bobs_private["id"])
    )
    token = scoped.secret

    assert ids(await listing(api, token)) == [first["id"], bobs_shared["id"]]
    data = await listing(api, token, unnamed="1")
    assert ids(data) == [first["id"], unnamed["id"], bobs_shared["id"]]
    assert data["total"] == 3
    assert ids(await listing(api, token, ownership="ownedByMe", unnamed="1")) == [first["id"], unnamed["id"]]
    assert ids(await listing(api, token, ownership="sharedWithMe")) == [bobs_shared["id"]]
    page = await listing(api, token, unnamed="1", offset="1", limit="1")
    assert (ids(page), page["total"]) == ([unnamed["id"]], 3)
    # The user's own token still sees everything.
    assert len(ids(await listing(api, unnamed="1"))) == 4


@pytest.mark.parametrize("scope", ["read-only", "store-scoped"])
async def test_scoped_tokens_cannot_create_stores(api: Api, services: Services, scope: str) -> None:
    existing = await api.create_store("existing")
    outside = await api.create_store("outside")
    if scope == "read-only":
        issued = await services.users.create_token("alice", read_only=True)
    else:
        issued = await services.users.create_token("alice", store_ids=(existing["id"],))
    headers = api.auth(issued.secret)

    for params in ({}, {"name": "brand-new"}):
        r = await api.client.post(STORES, params=params, headers=headers, json={})
        assert_error(r, 403, "insufficient-permissions")
    assert ids(await listing(api, unnamed="1")) == [existing["id"], outside["id"]]

    # Get-or-create of an existing store the token can see returns it.
    r = await api.client.post(STORES, params={"name": "existing"}, headers=headers, json={})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["id"] == existing["id"]
    r = await api.client.post(STORES, params={"name": "outside"}, headers=headers, json={})
    if scope == "read-only":
        assert r.status_code == 200 and r.json()["data"]["id"] == outside["id"]
    else:
        assert_error(r, 403, "insufficient-permissions")


# --- /v2/users/me -------------------------------------------------------------------------


async def test_users_me_get_and_put(api: Api, services: Services) -> None:
    r = await api.client.get(ME, headers=api.auth())
    assert r.status_code == 200, r.text
    me = r.json()["data"]
    assert (me["id"], me["username"], me["defaultGeneralAccess"]) == (
        await user_id(services, "alice"),
        "alice",
        "RESTRICTED",
    )
    assert ISO_MS.match(me["createdAt"])

    r = await api.client.put(ME, json={"defaultGeneralAccess": "ANYONE_WITH_ID_CAN_READ"}, headers=api.auth())
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {**me, "defaultGeneralAccess": "ANYONE_WITH_ID_CAN_READ"}
    assert (await api.client.get(ME, headers=api.auth())).json()["data"]["defaultGeneralAccess"] == (
        "ANYONE_WITH_ID_CAN_READ"
    )
    # Only the caller's account changed.
    bob = (await api.client.get(ME, headers=api.auth(BOB_TOKEN))).json()["data"]
    assert (bob["username"], bob["defaultGeneralAccess"]) == ("bob", "RESTRICTED")


@pytest.mark.parametrize(
    ("body", "type_"),
    [
        ({"defaultGeneralAccess": "ANYONE_WITH_NAME_CAN_READ"}, "invalid-value"),
        ({"defaultGeneralAccess": "FOLLOW_USER_SETTING"}, "invalid-value"),
        ({"defaultGeneralAccess": "restricted"}, "invalid-value"),
        ({"defaultGeneralAccess": None}, "invalid-value"),
        ({"defaultGeneralAccess": 1}, "invalid-value"),
        ({}, "invalid-value"),
        (["RESTRICTED"], "invalid-request"),
    ],
)
async def test_users_me_rejects_bad_values(api: Api, body: Any, type_: str) -> None:
    await api.client.put(ME, json={"defaultGeneralAccess": "ANYONE_WITH_ID_CAN_READ"}, headers=api.auth())
    assert_error(await api.client.put(ME, json=body, headers=api.auth()), 400, type_)
    assert (await api.client.get(ME, headers=api.auth())).json()["data"]["defaultGeneralAccess"] == (
        "ANYONE_WITH_ID_CAN_READ"
    )


async def test_users_me_needs_a_full_token(api: Api, services: Services) -> None:
    assert_error(await api.client.get(ME), 401, "token-not-provided")
    assert_error(await api.client.put(ME, json={"defaultGeneralAccess": "RESTRICTED"}), 401, "token-not-provided")
    store = await api.create_store("x")
    read_only = await services.users.create_token("alice", read_only=True)
    scoped = await services.users.create_token("alice", store_ids=(store["id"],))
    for issued in (read_only, scoped):
        headers = api.auth(issued.secret)
        assert (await api.client.get(ME, headers=headers)).status_code == 200
        r = await api.client.put(ME, json={"defaultGeneralAccess": "ANYONE_WITH_ID_CAN_READ"}, headers=headers)
        assert_error(r, 403, "insufficient-permissions")
    assert (await services.users.find_user("alice")).default_general_access.value == "RESTRICTED"
    assert_error(await api.client.delete(ME, headers=api.auth()), 405, "method-not-allowed")


async def test_follow_user_setting_follows_the_account_default_at_once(api: Api) -> None:
    follows = await api.create_store("follows")
    restricted = await api.create_store("restricted")
    r = await api.client.put(f"{STORES}/{restricted['id']}", json={"generalAccess": "RESTRICTED"}, headers=api.auth())
    assert r.status_code == 200
    assert (await put_record(api, follows["id"], "k")).status_code == 201
    record = f"{STORES}/{follows['id']}/records/k"

    assert_error(await get_store(api, follows["id"], None), 403, "insufficient-permissions")
    assert_error(await api.client.get(record), 403, "insufficient-permissions")

    r = await api.client.put(ME, json={"defaultGeneralAccess": "ANYONE_WITH_ID_CAN_READ"}, headers=api.auth())
    assert r.status_code == 200
    assert (await get_store(api, follows["id"], None)).status_code == 200
    assert (await api.client.get(record)).content == b"value"
    assert (await get_store(api, follows["id"], BOB_TOKEN)).status_code == 200
    # By ID only, and a store's own setting wins over the account's.
    assert_error(await get_store(api, "alice~follows", None), 403, "insufficient-permissions")
    assert_error(await get_store(api, restricted["id"], None), 403, "insufficient-permissions")
    # Reading is all it opens up.
    assert_error(await put_record(api, follows["id"], "k", BOB_TOKEN), 403, "insufficient-permissions")

    r = await api.client.put(ME, json={"defaultGeneralAccess": "RESTRICTED"}, headers=api.auth())
    assert r.status_code == 200
    assert_error(await get_store(api, follows["id"], None), 403, "insufficient-permissions")
    assert_error(await api.client.get(record), 403, "insufficient-permissions")
