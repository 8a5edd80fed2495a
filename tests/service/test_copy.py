"""Copying a deployment (`service/copy.py`): memory and SQLite here; PostgreSQL + S3 in tests/cli."""

from __future__ import annotations

import dataclasses
import gzip
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kvbox.backends.registry import open_backend
from kvbox.core.clock import FakeClock
from kvbox.core.errors import TargetNotEmptyError
from kvbox.core.models import ExpiryRule, User
from kvbox.service.container import Services, build_services
from kvbox.service.copy import CopyPhase, Tally, copy_and_verify, copy_deployment, fingerprint
from kvbox.service.principal import Principal
from kvbox.service.settings import Settings

pytestmark = pytest.mark.anyio

ALICE = "alice-token-0123456789"
BIG = os.urandom(64 * 1024)  # above the inline threshold: a blob
ZIPPED = gzip.compress(b"text " * 100)


async def body(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def populate(s: Services) -> None:
    """Users with tokens, named and unnamed stores, a grant, inline, blob, compressed, empty and
    expiring records, store expiry rules, a deleted prefix and a deleted store, all made
    through the use cases."""
    alice = Principal(user=(await s.users.create_user("alice", token=ALICE)).user)
    await s.users.create_user("bob")
    await s.users.create_token("alice", name="ci", read_only=True)
    docs, _ = await s.stores.get_or_create(alice, name="docs")
    unnamed, _ = await s.stores.get_or_create(alice)
    doomed, _ = await s.stores.get_or_create(alice, name="doomed")
    await s.sharing.grant(alice, docs.store.id, "bob", "READ")
    records = [
        (docs, "INPUT", b'{"a": [1, 2]}', "application/json; charset=utf-8", None),
        (docs, "big", BIG, "application/octet-stream", None),
        (docs, "zipped", ZIPPED, "text/plain", "gzip"),
        (unnamed, "empty", b"", "text/plain", None),
        (doomed, "gone", b"xyz", "text/plain", None),
    ]
    for store, key, data, ctype, encoding in records:
        await s.records.put(
            alice, store.store.id, key, body=body(data), content_type=ctype,
            content_encoding=encoding, content_length=len(data),
        )  # fmt: skip
    await s.stores.delete(alice, doomed.store.id)
    await s.records.put(alice, docs.store.id, "page", body=body(b"p"), content_type="text/html", content_encoding=None,
                        content_length=1, expires_at=s.clock.now_ms() + 3_600_000)  # fmt: skip
    await s.records.put(alice, docs.store.id, "tmp-1", body=body(b"t"), content_type="text/plain",
                        content_encoding=None, content_length=1)  # fmt: skip
    await s.records.delete_prefix(alice, docs.store.id, "tmp-")
    await s.stores.update(alice, docs.store.id, record_expiry=(ExpiryRule("", 86400),))


@pytest.fixture
async def memory(tmp_path: Path, clock: FakeClock) -> AsyncIterator[Services]:
    settings = Settings(backend="memory", data_dir=tmp_path / "unused", inline_threshold=1024, rate_limits=False)
    services = build_services(settings, clock=clock)
    await populate(services)
    try:
        yield services
    finally:
        await services.close()


async def test_a_memory_deployment_copies_whole_into_sqlite(memory: Services, tmp_path: Path) -> None:
    index, blobs = open_backend("sqlite", data_dir=tmp_path / "copy", durable=False)
    try:
        seen: list[tuple[int, int]] = []
        copied = await copy_deployment(
            (memory.index, memory.blobs), (index, blobs), progress=lambda t: seen.append((t.stores, t.records))
        )
        check = await fingerprint(index, blobs)
    finally:
        await index.close()
        await blobs.close()
    # The deleted store and the deleted prefix stay behind; the expiring record and the rules go along.
    assert copied.counts() == (2, 3, 2, 1, 5, 14 + len(BIG) + len(ZIPPED))
    assert copied.matches(check) and copied.matches(await fingerprint(memory.index, memory.blobs))
    assert seen == [(1, 4), (2, 5)]  # after each store

    # The copy serves the same users, tokens, permissions and bytes.
    target = build_services(Settings(data_dir=tmp_path / "copy", inline_threshold=1024, rate_limits=False))
    try:
        alice = await target.auth.authenticate(ALICE)
        docs = await target.stores.get(alice, "~docs")
        assert docs.store.record_expiry.rules == (ExpiryRule("", 86400),)
        page = await target.records.head(alice, docs.store.id, "page")
        assert page.meta.expires_at is not None and page.expires_at == page.meta.expires_at
        assert docs.store.record_count == 4  # the deleted prefix's row stayed behind
        read = await target.records.get(alice, docs.store.id, "big")
        assert read.body is not None and b"".join([c async for c in read.body]) == BIG
        zipped = await target.records.get(alice, docs.store.id, "zipped")
        assert zipped.meta.encoding == "gzip"
        bob = Principal(user=await target.users.find_user("bob"))
        assert (await target.records.head(bob, docs.store.id, "INPUT")).meta.size == 13
        listed = await target.stores.list(alice, offset=0, limit=10, unnamed=True)
        assert {r.store.name for r in listed.items} == {"docs", None}
    finally:
        await target.close()


async def test_copy_and_verify_between_data_directories(tmp_path: Path, clock: FakeClock) -> None:
    source = Settings(data_dir=tmp_path / "source", inline_threshold=1024, rate_limits=False)
    services = build_services(source, clock=clock)
    try:
        await populate(services)
    finally:
        await services.close()

    phases: list[CopyPhase] = []
    target = Settings(data_dir=tmp_path / "target")
    report = await copy_and_verify(source, target, progress=lambda phase, _: phases.append(phase))
    assert report.verified and report.copied.records == 5
    assert phases == [CopyPhase.COPYING] * 2 + [CopyPhase.VERIFYING] * 2

    with pytest.raises(TargetNotEmptyError) as refused:
        await copy_and_verify(source, target)
    assert refused.value.status == 409 and "already has users" in refused.value.message


def test_a_tally_matches_only_the_same_rows() -> None:
    row = User(id="u1", username="ann", created_at=1)
    one, two = Tally(), Tally()
    for tally in (one, two):
        tally.users += 1
        tally.add("user", row)
    assert one.matches(two)
    two.add("user", dataclasses.replace(row, username="bob"))
    assert not one.matches(two)
