"""kvbox's sharing extension through the client: grants on a store, the caller's account."""

from __future__ import annotations

from typing import Any

import pytest

from kvbox.client import ForbiddenError, KvboxClient, KvboxClientAsync, NotFoundError, StoreClient

from .conftest import create_user, value_of


@pytest.fixture(scope="module")
def other_token(server: Any) -> str:
    return create_user(server, "friend")


def test_share_read_then_unshare(server: Any, store: StoreClient, other_token: str) -> None:
    store.set_record("doc", {"shared": True})
    with KvboxClient(other_token, api_url=server.url, max_retries=0) as friend:
        me = friend.me()
        shared_store = friend.key_value_store(store.path.rsplit("/", 1)[-1])
        with pytest.raises(ForbiddenError):
            shared_store.get_record("doc")
        grant = store.share(me.username, "READ")
        assert grant.username == me.username and grant.permission == "READ" and grant.user_id == me.id
        assert [g.username for g in store.list_grants()] == [me.username]
        assert value_of(shared_store.get_record("doc")) == {"shared": True}
        with pytest.raises(ForbiddenError):
            shared_store.set_record("doc", "no writes with READ")
        assert store.share(me.id, "WRITE").permission == "WRITE"
        shared_store.set_record("doc", "written by a friend")
        assert any(s.id == grant_store_id(store) for s in friend.key_value_stores().iterate(ownership="sharedWithMe"))
        store.unshare(me.username)
        assert store.list_grants() == []
        with pytest.raises(ForbiddenError):
            shared_store.get_record("doc")
        with pytest.raises(NotFoundError):
            store.unshare(me.username)


def grant_store_id(store: StoreClient) -> str:
    info = store.get()
    assert info is not None
    return info.id


def test_me_and_default_general_access(client: KvboxClient) -> None:
    me = client.me()
    assert me.username.startswith("client-") and me.created_at is not None
    changed = client.update_me(default_general_access="ANYONE_WITH_ID_CAN_READ")
    assert changed.default_general_access == "ANYONE_WITH_ID_CAN_READ"
    assert client.update_me(default_general_access="RESTRICTED").default_general_access == "RESTRICTED"


@pytest.mark.anyio
async def test_async_sharing(aclient: KvboxClientAsync, other_token: str, server: Any) -> None:
    info = await aclient.key_value_stores().get_or_create()
    store = aclient.key_value_store(info.id)
    async with KvboxClientAsync(other_token, api_url=server.url) as friend:
        me = await friend.me()
        await store.share(me.username, "MANAGE")
        assert [g.permission for g in await store.list_grants()] == ["MANAGE"]
        await store.unshare(me.username)
    await store.delete()
