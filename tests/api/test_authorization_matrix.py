"""Who may do what: every store endpoint x every kind of caller x every general access value.

The two tables below are the documentation. `ACCESS` says what each caller holds on Alice's
store under each general access; `ENDPOINTS` says what each endpoint needs. A caller whose
permission covers the need gets the endpoint's success status; otherwise an anonymous caller
asking for more than READ gets 401, everyone else 403, and the store is left exactly as it was.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from kvbox.core.clock import FakeClock
from kvbox.core.models import GeneralAccess, Grant, Permission
from kvbox.core.signatures import sign_record, sign_storage
from kvbox.server import create_app
from kvbox.service.container import Services, build_services
from kvbox.service.principal import Principal
from kvbox.service.settings import Settings

pytestmark = pytest.mark.anyio

# Column order of ACCESS: the store's generalAccess, and for FOLLOW_USER_SETTING the owner's default.
SETTINGS = (
    ("RESTRICTED", None),
    ("ANYONE_WITH_ID_CAN_READ", None),
    ("ANYONE_WITH_NAME_CAN_READ", None),
    ("FOLLOW_USER_SETTING", "RESTRICTED"),
    ("FOLLOW_USER_SETTING", "ANYONE_WITH_ID_CAN_READ"),
)

# ID = may read when the store is addressed by ID, not by name. RECORD = may read the signed record only.
# fmt: off
ACCESS: dict[str, tuple[str, str, str, str, str]] = {
    #                       RESTRICTED  BY ID     BY NAME   FOLLOW:R  FOLLOW:ID
    "owner":               ("MANAGE",  "MANAGE", "MANAGE", "MANAGE", "MANAGE"),
    "owner, read-only":    ("READ",    "READ",   "READ",   "READ",   "READ"),
    "owner, this store":   ("MANAGE",  "MANAGE", "MANAGE", "MANAGE", "MANAGE"),
    "owner, other store":  ("NONE",    "ID",     "READ",   "NONE",   "ID"),
    "READ grantee":        ("READ",    "READ",   "READ",   "READ",   "READ"),
    "WRITE grantee":       ("WRITE",   "WRITE",  "WRITE",  "WRITE",  "WRITE"),
    "MANAGE grantee":      ("MANAGE",  "MANAGE", "MANAGE", "MANAGE", "MANAGE"),
    "WRITE grantee, r/o":  ("READ",    "READ",   "READ",   "READ",   "READ"),
    "unrelated user":      ("NONE",    "ID",     "READ",   "NONE",   "ID"),
    "anonymous":           ("NONE",    "ID",     "READ",   "NONE",   "ID"),
    "anon, store sig":     ("READ",    "READ",   "READ",   "READ",   "READ"),
    "anon, record sig":    ("RECORD",  "ID",     "READ",   "RECORD", "ID"),
    "anon, tampered sig":  ("NONE",    "ID",     "READ",   "NONE",   "ID"),
    "anon, expired sig":   ("NONE",    "ID",     "READ",   "NONE",   "ID"),
}

ENDPOINTS: dict[str, tuple[str, str, Any, str, int]] = {
    # name:              (method,   path under the store,    body,                need,     success)
    "get store":         ("GET",    "",                      None,                "READ",   200),
    "get store by name": ("GET",    "@name",                 None,                "READ",   200),
    "list keys":         ("GET",    "/keys",                 None,                "READ",   200),
    "download ZIP":      ("GET",    "/records",              None,                "READ",   200),
    "get record":        ("GET",    "/records/rec",          None,                "READ",   200),
    "head record":       ("HEAD",   "/records/rec",          None,                "READ",   200),
    "put record":        ("PUT",    "/records/rec",          b"changed",          "WRITE",  201),
    "delete record":     ("DELETE", "/records/rec",          None,                "WRITE",  204),
    "delete by prefix":  ("DELETE", "/records",              None,                "WRITE",  200),
    "rename store":      ("PUT",    "",                      {"name": "renamed"}, "WRITE",  200),
    "set access":        ("PUT",    "",                      {"generalAccess": "@flip"}, "MANAGE", 200),
    "set expiry rules":  ("PUT",    "",                      {"recordExpiry": [{"prefix": "r", "expireAfterSecs": 60}]},
                          "MANAGE", 200),
    "list grants":       ("GET",    "/grants",               None,                "MANAGE", 200),
    "share":             ("PUT",    "/grants/eve",           {"permission": "READ"}, "MANAGE", 200),
    "read changes":      ("GET",    "/changes",              None,                "READ",   200),
    "list webhooks":     ("GET",    "/webhooks",             None,                "MANAGE", 200),
    "create webhook":    ("POST",   "/webhooks",             {"requestUrl": "http://93.184.216.34/h"}, "MANAGE", 201),
    "delete store":      ("DELETE", "",                      None,                "MANAGE", 204),
}
# fmt: on

RECORD_READS = {"get record", "head record"}
WRITES = {
    "put record",
    "delete record",
    "delete by prefix",
    "rename store",
    "set access",
    "set expiry rules",
    "share",
    "create webhook",
    "delete store",
}


def expected_status(caller: str, setting: int, endpoint: str) -> int:
    _, path, _, need, success = ENDPOINTS[endpoint]
    held = ACCESS[caller][setting]
    if held == "ID":
        held = "NONE" if path == "@name" else "READ"
    if held == "RECORD":
        held = "READ" if endpoint in RECORD_READS else "NONE"
    if Permission[held] >= Permission[need]:
        return success
    return 401 if caller.startswith("anon") and Permission[need] > Permission.READ else 403


@dataclass
class World:
    services: Services
    client: httpx.AsyncClient
    store_id: str
    tokens: dict[str, str | None]
    signatures: dict[str, str | None]


async def build_world(general_access: str, owner_default: str | None) -> AsyncIterator[World]:
    clock = FakeClock(start_ms=int(time.time() * 1000))
    svc = build_services(Settings(backend="memory", public_url="http://kvbox.test", rate_limits=False), clock=clock)
    users = {}
    for name in ("alice", "bob", "carol", "dave", "eve"):
        users[name] = await svc.users.create_user(name, token=f"{name}-token-0123456789")
    if owner_default:
        await svc.users.set_default_access("alice", GeneralAccess(owner_default))
    index = svc.index
    alice = users["alice"].user
    owner = Principal(user=alice, token=users["alice"].token)
    store, _ = await svc.stores.get_or_create(owner, name="shared-store")
    other, _ = await svc.stores.get_or_create(owner, name="other-store")
    store_id = store.store.id
    await index.update_store(store_id, modified_at=clock.now_ms(), general_access=GeneralAccess(general_access))

    async def body() -> AsyncIterator[bytes]:
        yield b"original"

    await svc.records.put(owner, store_id, "rec", body=body(), content_type="text/plain",
                          content_encoding=None, content_length=None)  # fmt: skip
    for grantee, level in (("bob", Permission.READ), ("carol", Permission.WRITE), ("dave", Permission.MANAGE)):
        await index.set_grant(Grant(store_id, users[grantee].user.id, level, clock.now_ms()))
    ro = await svc.users.create_token("alice", read_only=True)
    here = await svc.users.create_token("alice", store_ids=(store_id,))
    elsewhere = await svc.users.create_token("alice", store_ids=(other.store.id,))
    carol_ro = await svc.users.create_token("carol", read_only=True)
    secret = store.store.url_signing_secret
    valid = sign_storage(secret, store_id, expires_at_ms=clock.now_ms() + 3_600_000)
    tokens: dict[str, str | None] = {
        "owner": users["alice"].secret,
        "owner, read-only": ro.secret,
        "owner, this store": here.secret,
        "owner, other store": elsewhere.secret,
        "READ grantee": users["bob"].secret,
        "WRITE grantee": users["carol"].secret,
        "MANAGE grantee": users["dave"].secret,
        "WRITE grantee, r/o": carol_ro.secret,
        "unrelated user": users["eve"].secret,
    }
    signatures: dict[str, str | None] = {
        "anon, store sig": valid,
        "anon, record sig": sign_record(secret, "rec"),
        "anon, tampered sig": valid[:-2] + ("AA" if not valid.endswith("AA") else "BB"),
        "anon, expired sig": sign_storage(secret, store_id, expires_at_ms=clock.now_ms() - 1),
    }
    app = create_app(services=svc)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kvbox.test") as client:
        yield World(svc, client, store_id, tokens, signatures)
    await svc.close()


async def snapshot(world: World) -> dict[str, Any]:
    """Everything a refused request must leave alone (counters and access times aside)."""
    index = world.services.index
    store = await index.get_store(world.store_id)
    if store is None:
        return {"exists": False}
    record = await index.get_record(world.store_id, "rec")
    keys = await index.list_keys(world.store_id, after=None, prefix=None, limit=100)
    grants = await index.list_grants(world.store_id)
    return {
        "exists": True,
        "name": store.name,
        "access": store.general_access,
        "expiry": store.record_expiry,
        "record": (record.inline, record.content_type) if record else None,
        "keys": [k.key for k in keys.items],
        "grants": sorted((g.user_id, g.permission) for g in grants),
        "webhooks": [w.request_url for w in await index.list_webhooks(world.store_id)],
    }


CASES = [
    pytest.param(caller, setting, endpoint, id=f"{caller} | {'/'.join(x for x in SETTINGS[setting] if x)} | {endpoint}")
    for caller in ACCESS
    for setting in range(len(SETTINGS))
    for endpoint in ENDPOINTS
]


@pytest.mark.parametrize(("caller", "setting", "endpoint"), CASES)
async def test_authorization_matrix(caller: str, setting: int, endpoint: str) -> None:
    general_access, owner_default = SETTINGS[setting]
    async for world in build_world(general_access, owner_default):
        method, path, body, _, _ = ENDPOINTS[endpoint]
        base = "/v2/key-value-stores/"
        url = base + ("alice~shared-store" if path == "@name" else world.store_id + path)
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        token = world.tokens.get(caller)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        signature = world.signatures.get(caller)
        if signature:
            params["signature"] = signature
        if endpoint == "delete by prefix":
            params["prefix"] = "re"
        if body == {"generalAccess": "@flip"}:
            body = {"generalAccess": "RESTRICTED" if general_access != "RESTRICTED" else "ANYONE_WITH_ID_CAN_READ"}
        before = await snapshot(world)
        kwargs: dict[str, Any] = {"headers": headers, "params": params}
        if isinstance(body, bytes):
            kwargs["content"] = body
            headers["Content-Type"] = "text/plain"
        elif body is not None:
            kwargs["json"] = body
        response = await world.client.request(method, url, **kwargs)
        after = await snapshot(world)

        want = expected_status(caller, setting, endpoint)
        assert response.status_code == want, response.text
        if want >= 400:
            assert after == before, "a refused request changed the store"
            if method != "HEAD":
                error = response.json()["error"]
                assert error["type"] == ("token-not-provided" if want == 401 else "insufficient-permissions")
        elif endpoint in WRITES:
            assert after != before, "an allowed write changed nothing"
        else:
            assert after == before, "a read changed the store"
