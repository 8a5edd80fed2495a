"""A user only ever sees, in the console, what the API would let them see (in-process)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from conftest import ALICE_TOKEN, BOB_TOKEN
from console.conftest import Console
from kvbox.core.models import Permission
from kvbox.service.principal import Principal

pytestmark = pytest.mark.anyio


async def principal(console: Console, token: str) -> Principal:
    return await console.services.auth.authenticate(token)


async def bobs_store(console: Console, name: str | None = "bob-secret") -> str:
    bob = await principal(console, BOB_TOKEN)
    resolved, _ = await console.services.stores.get_or_create(bob, name=name)
    await console.services.records.put(
        bob, resolved.store.id, "SECRET", body=_one(b"top secret"), content_type="text/plain",
        content_encoding=None, content_length=10,
    )  # fmt: skip
    return resolved.store.id


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_another_users_store_is_invisible_and_unreachable(console: Console) -> None:
    named = await bobs_store(console)
    unnamed = await bobs_store(console, None)
    await console.sign_in(ALICE_TOKEN)
    for listing in ("/stores", "/stores?unnamed=1", "/stores?unnamed=1&q=bob", "/stores?unnamed=1&sort=name"):
        page = await console.get(listing)
        assert page.status_code == 200
        assert named not in page.text and unnamed not in page.text and "bob-secret" not in page.text, listing
    for store in (named, unnamed, "bob~bob-secret"):
        for suffix in ("", "/settings", "/api", "/records/SECRET", "/records/SECRET/raw", "/download.zip"):
            r = await console.get(f"/stores/{store}{suffix}")
            assert r.status_code == 404, (store, suffix, r.status_code)
            assert "top secret" not in r.text and "bob-secret" not in r.text
            assert "does not exist, or you do not have access" in r.text or "not found" in r.text.lower()
    # Changes are refused too, and change nothing.
    for path, data in [
        ("/rename", {"name": "taken-over"}),
        ("/access", {"general_access": "ANYONE_WITH_ID_CAN_READ"}),
        ("/grants", {"username": "alice", "permission": "MANAGE"}),
        ("/delete", {"confirm": "bob-secret"}),
        ("/records/SECRET/delete", {"confirm": "yes"}),
    ]:
        r = await console.post(f"/stores/{named}{path}", data, follow_redirects=True)
        assert r.status_code in (403, 404) or "Insufficient permissions" in r.text, path
    r = await console.upload(named, "SECRET", b"overwritten", "text/plain")
    assert r.status_code == 403
    bob = await principal(console, BOB_TOKEN)
    resolved = await console.services.stores.get(bob, named)
    assert resolved.store.name == "bob-secret" and resolved.store.record_count == 1
    read = await console.services.records.get(bob, named, "SECRET")
    assert read.body is not None
    assert b"".join([c async for c in read.body]) == b"top secret"
    assert await console.services.sharing.list(bob, named) == []


async def test_shared_store_appears_with_the_granted_permission(console: Console) -> None:
    store = await bobs_store(console)
    bob = await principal(console, BOB_TOKEN)
    await console.services.sharing.grant(bob, store, "alice", "READ")
    await console.sign_in(ALICE_TOKEN)
    listing = await console.get("/stores")
    assert store in listing.text and "bob-secret" in listing.text
    page = await console.get(f"/stores/{store}")
    assert page.status_code == 200 and "SECRET" in page.text
    assert "You can read" in page.text
    assert 'id="upload"' not in page.text and "/delete" not in page.text  # no write controls for a reader
    settings = await console.get(f"/stores/{store}/settings")
    assert "You can read this store but not change it." in settings.text
    assert (await console.upload(store, "X", b"x", "text/plain")).status_code == 403
    r = await console.post(f"/stores/{store}/rename", {"name": "mine-now"}, follow_redirects=True)
    assert "Insufficient permissions" in r.text
    # A reader's link is the plain API URL, never a signed one.
    assert "signature=" not in page.text.split('id="records"')[1]
    # WRITE adds upload and delete, but still no sharing or general access.
    await console.services.sharing.grant(bob, store, "alice", "WRITE")
    page = await console.get(f"/stores/{store}")
    assert 'id="upload"' in page.text and "Copy signed link" in page.text
    assert (await console.upload(store, "X", b"x", "text/plain")).status_code == 201
    settings = await console.get(f"/stores/{store}/settings")
    assert 'id="rename"' in settings.text and 'id="sharing"' not in settings.text


async def test_public_store_is_readable_by_id_but_not_listed(console: Console) -> None:
    store = await bobs_store(console)
    bob = await principal(console, BOB_TOKEN)
    await console.services.stores.update(bob, store, general_access="ANYONE_WITH_ID_CAN_READ")
    await console.sign_in(ALICE_TOKEN)
    assert store not in (await console.get("/stores")).text
    page = await console.get(f"/stores/{store}/records/SECRET")
    assert page.status_code == 200 and "top secret" in page.text
    # By name it stays private, exactly as in the API.
    assert (await console.get("/stores/bob~bob-secret")).status_code == 404


async def test_read_only_token_gets_a_read_only_console(console: Console) -> None:
    alice = await principal(console, ALICE_TOKEN)
    resolved, _ = await console.services.stores.get_or_create(alice, name="mine")
    issued = await console.services.users.create_token("alice", token="alice-readonly-0123456789", read_only=True)
    assert issued.token.read_only
    await console.sign_in("alice-readonly-0123456789")
    listing = await console.get("/stores")
    assert "mine" in listing.text and "Create store" not in listing.text
    page = await console.get(f"/stores/{resolved.store.id}")
    assert 'id="upload"' not in page.text
    r = await console.post("/stores", {"name": "new-one"}, follow_redirects=True)
    assert "may not create" in r.text
    assert (await console.upload(resolved.store.id, "k", b"v", "text/plain")).status_code == 403
    account = await console.get("/account")
    assert "read-only" in account.text


async def test_store_scoped_token_sees_only_its_stores(console: Console) -> None:
    alice = await principal(console, ALICE_TOKEN)
    one, _ = await console.services.stores.get_or_create(alice, name="one")
    two, _ = await console.services.stores.get_or_create(alice, name="two")
    await console.services.users.create_token("alice", token="alice-scoped-0123456789", store_ids=(one.store.id,))
    await console.sign_in("alice-scoped-0123456789")
    listing = await console.get("/stores")
    assert one.store.id in listing.text and two.store.id not in listing.text
    assert (await console.get(f"/stores/{two.store.id}")).status_code == 404
    assert (await console.get(f"/stores/{one.store.id}")).status_code == 200


async def test_permissions_shown_come_from_the_service(console: Console) -> None:
    """The console renders the permission the service resolved; it has no rules of its own."""
    alice = await principal(console, ALICE_TOKEN)
    resolved, _ = await console.services.stores.get_or_create(alice, name="perm")
    assert resolved.permission is Permission.MANAGE
    await console.sign_in(ALICE_TOKEN)
    settings = await console.get(f"/stores/{resolved.store.id}/settings")
    for section in ('id="rename"', 'id="access"', 'id="sharing"', 'id="delete"'):
        assert section in settings.text
