"""The one-round-trip record path in the `MetadataIndex` contract, on every backend:
`read_record_as` returns the rows a read is decided on, and `put_record_as` writes only while
the rows a write was decided on still hold (otherwise it writes nothing, counters included)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from backends.test_conditional_contract import counts, rec
from backends.test_index_contract import T0, add_store
from kvbox.backends.base import BasisChangedError, MetadataIndex
from kvbox.core.models import (
    NO_EXPIRY,
    ExpiryRule,
    GeneralAccess,
    Grant,
    Permission,
    RecordExpiry,
    StoreLookup,
    Token,
    User,
    Visibility,
    WriteBasis,
)
from kvbox.core.sentinels import UNSET

pytestmark = pytest.mark.anyio


async def people(index: MetadataIndex) -> tuple[User, User, Token]:
    owner = User(id="owner1", username="olive", created_at=T0)
    guest = User(id="guest1", username="gus", created_at=T0, default_general_access=GeneralAccess.RESTRICTED)
    token = Token(id="tok1", user_id=guest.id, token_hash="h" * 64, name="default", created_at=T0)
    for user in (owner, guest):
        await index.insert_user(user)
    await index.insert_token(token)
    return owner, guest, token


async def test_read_record_as_returns_every_row_the_decision_needs(index: MetadataIndex) -> None:
    owner, guest, token = await people(index)
    store = await add_store(index, name="shared", user_id=owner.id)
    grant = Grant(store.id, guest.id, Permission.READ, T0)
    await index.set_grant(grant)
    await index.put_record(store.id, rec("k", "e0"))
    for lookup in (StoreLookup(store_id=store.id), StoreLookup(owner="olive", name="shared"),
                   StoreLookup(owner=owner.id, name="shared")):  # fmt: skip
        seen = await index.read_record_as(token.token_hash, None, lookup, "k")
        assert (seen.token, seen.user, seen.owner, seen.grant, seen.record) == (
            token,
            guest,
            owner,
            grant,
            rec("k", "e0"),
        )
        assert seen.store is not None and seen.store.id == store.id
    missing = await index.read_record_as("x" * 64, None, StoreLookup(store_id=store.id), "nope")
    assert (missing.token, missing.user, missing.grant, missing.record) == (None, None, None, None)
    assert missing.store is not None and missing.owner == owner
    own = await index.read_record_as(None, owner.id, StoreLookup(name="shared"), "k")
    assert own.user == owner and own.grant is None and own.record == rec("k", "e0")
    nobody = await index.read_record_as(None, None, StoreLookup(name="shared"), "k")
    assert (nobody.store, nobody.record) == (None, None)


async def test_put_record_as_writes_only_while_its_basis_holds(index: MetadataIndex) -> None:
    owner, guest, token = await people(index)
    store = await add_store(index, name="shared", user_id=owner.id)
    grant = Grant(store.id, guest.id, Permission.WRITE, T0)
    await index.set_grant(grant)
    basis = WriteBasis(token.token_hash, token, grant, None, NO_EXPIRY)
    assert await index.put_record_as(basis, store.id, rec("k", "e1")) is None
    assert await index.put_record_as(basis, store.id, rec("k", "e2")) == rec("k", "e1")
    before = await counts(index, store.id)

    changed = [
        dataclasses.replace(basis, grant=dataclasses.replace(grant, permission=Permission.READ)),
        dataclasses.replace(basis, grant=None),
        dataclasses.replace(basis, token=dataclasses.replace(token, read_only=True)),
        dataclasses.replace(basis, name="renamed"),
        dataclasses.replace(basis, record_expiry=RecordExpiry((ExpiryRule("", 60),))),
    ]
    for stale in changed:
        with pytest.raises(BasisChangedError):
            await index.put_record_as(stale, store.id, rec("k", "nope"))
    await index.delete_grant(store.id, guest.id)  # the grant removed: the basis no longer holds
    with pytest.raises(BasisChangedError):
        await index.put_record_as(basis, store.id, rec("k", "nope"))
    await index.set_grant(grant)
    await index.update_store(store.id, modified_at=T0, name="renamed", general_access=UNSET)
    assert await index.put_record_as(dataclasses.replace(basis, name="renamed"), store.id, rec("k", "e3")) is not None
    await index.delete_token(token.id)  # the token revoked
    with pytest.raises(BasisChangedError):
        await index.put_record_as(basis, store.id, rec("k", "nope"))
    assert await index.get_record(store.id, "k") == rec("k", "e3")
    assert (await counts(index, store.id))[:2] == (before[0], before[1] + 1)  # refusals counted nothing
    with pytest.raises(BasisChangedError):
        await index.put_record_as(WriteBasis(None, None, None, None, NO_EXPIRY), "no-such-store", rec("k", "x"))


async def test_reads_asked_for_together_see_what_each_sees_alone(index: MetadataIndex) -> None:
    """The record reads of one turn go out together (on PostgreSQL, as one statement over arrays):
    every read still gets the rows it gets alone, whatever its token, store lookup and key."""
    owner, guest, token = await people(index)
    store = await add_store(index, name="shared", user_id=owner.id)
    other = await add_store(index, name="other", user_id=guest.id)
    await index.set_grant(Grant(store.id, guest.id, Permission.READ, T0))
    keys = ["k", "NULL", 'quote"d', "a,b", "{braces}", "back\\slash", "ключ", "p/hidden"]
    for key in keys:
        await index.put_record(store.id, rec(key, "e-" + str(len(key))))
    await index.put_record(other.id, rec("k", "mine"))
    assert await index.delete_prefix(store.id, "p/", visible=Visibility(T0 + 10_000)) == 1
    asks: list[tuple[str | None, str | None, StoreLookup, str]] = [
        (token.token_hash, None, lookup, key)
        for lookup in (
            StoreLookup(store_id=store.id),
            StoreLookup(owner="olive", name="shared"),
            StoreLookup(owner=owner.id, name="shared"),
            StoreLookup(name="other"),
            StoreLookup(store_id="no-such-store"),
        )
        for key in [*keys, "missing"]
    ]
    asks += [
        ("x" * 64, None, StoreLookup(store_id=store.id), "k"),
        (None, owner.id, StoreLookup(name="shared"), "k"),
        (None, None, StoreLookup(name="shared"), "k"),
        (None, guest.id, StoreLookup(name="other"), "NULL"),
    ]
    alone = [await index.read_record_as(*ask) for ask in asks]
    together = await asyncio.gather(*(index.read_record_as(*ask) for ask in asks))
    assert together == alone
    by_key = {ask[3]: seen.record for ask, seen in zip(asks, alone, strict=True) if ask[2].store_id == store.id}
    assert by_key == {**{key: rec(key, "e-" + str(len(key))) for key in keys}, "p/hidden": None, "missing": None}
    assert alone[(len(keys) + 1) * 3].record == rec("k", "mine")  # "other" is the token user's own store
