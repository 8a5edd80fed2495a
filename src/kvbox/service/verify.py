"""Checking a deployment's index against its blob store (`kvbox verify`), on every backend.

Every record's stored bytes are read, inline or from their blob, and counted against the
row's size: a blob the row points to that cannot be read is damage (unless the row changed
meanwhile, as on a running server). A store's record count and stored bytes must equal the
sums over its rows. Blobs no row points to are orphans: left by a crash between a blob's
write and its commit, harmless, and removed by the server in time; only those older than the
cutoff are reported, since a younger one may belong to a write about to commit.

The walk also tallies the deployment exactly as `kvbox copy` does (counts and one SHA-256),
so a backup and its restore, or a copy and its source, can be compared. A store written
while it is being checked is read again, a few times at most; one that keeps changing is
reported as busy, not as damaged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.core.errors import StorageError
from kvbox.core.models import RecordMeta, Store
from kvbox.service.copy import Tally, body_of, records_of, stores_of
from kvbox.service.deployment import opened_storage
from kvbox.service.settings import Settings

ATTEMPTS = 3
_CHUNK = 500

MISSING = "blob missing or unreadable"
WRONG_SIZE = "body size differs from the record's"
WRONG_COUNTERS = "store counters differ from its records"


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of damage: what is wrong, in which store and record."""

    problem: str
    store_id: str
    key: str | None
    detail: str


@dataclass
class VerifyReport:
    tally: Tally = field(default_factory=Tally)
    damage: list[Finding] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    blobs: int = 0

    @property
    def ok(self) -> bool:
        return not self.damage


@dataclass
class _StoreCheck:
    """What one pass over a store found, kept only if the store did not change meanwhile."""

    entries: list[tuple[str, Any, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    blob_ids: list[str] = field(default_factory=list)
    records: int = 0
    size: int = 0


async def verify_deployment(settings: Settings, *, orphans_before_ms: int) -> VerifyReport:
    """Open the deployment the settings name and verify it."""
    async with opened_storage(settings) as (index, blobs):
        return await verify(index, blobs, orphans_before_ms=orphans_before_ms)


async def verify(
    index: MetadataIndex,
    blobs: BlobStore,
    *,
    orphans_before_ms: int,
    progress: Callable[[VerifyReport], None] | None = None,
) -> VerifyReport:
    """Check every store and record; blobs written before `orphans_before_ms` that no row
    points to are reported as orphans."""
    report = VerifyReport()
    referenced: set[str] = set()
    users = await index.list_users()
    for user in users:
        report.tally.users += 1
        report.tally.add("user", user)
        for token in await index.list_tokens(user.id):
            report.tally.tokens += 1
            report.tally.add("token", token)
    for user in users:
        async for store in stores_of(index, user):
            await _verify_store(index, blobs, store, report, referenced)
            if progress is not None:
                progress(report)
    report.blobs = len(referenced)
    report.orphans = await _orphans(index, blobs, referenced, orphans_before_ms)
    return report


def _activity(store: Store) -> tuple[int, int, int]:
    return store.stats.write_count, store.stats.delete_count, store.modified_at


async def _verify_store(
    index: MetadataIndex, blobs: BlobStore, store: Store, report: VerifyReport, referenced: set[str]
) -> None:
    check = _StoreCheck()
    for _ in range(ATTEMPTS):
        before = await index.get_store(store.id)
        check = await _check_store(index, blobs, store.id)
        after = await index.get_store(store.id)
        if before is None or after is None:
            return  # deleted while being checked
        if _activity(before) != _activity(after):
            continue  # written meanwhile: its counters and rows may disagree for a moment
        if (check.records, check.size) != (after.record_count, after.stats.storage_bytes):
            counted = f"{after.record_count} records, {after.stats.storage_bytes} bytes"
            found = f"{check.records} records, {check.size} bytes"
            check.findings.append(Finding(WRONG_COUNTERS, store.id, None, f"counters say {counted}; rows hold {found}"))
        _keep(report, check, after)
        referenced.update(check.blob_ids)
        return
    report.busy.append(store.id)
    referenced.update(check.blob_ids)


def _keep(report: VerifyReport, check: _StoreCheck, store: Store) -> None:
    tally = report.tally
    for kind, row, sha in check.entries:
        tally.add(kind, row, sha)
        tally.grants += kind == "grant"
    tally.records += check.records
    tally.bytes += check.size
    tally.stores += 1
    tally.add("store", store)
    report.damage.extend(check.findings)


async def _check_store(index: MetadataIndex, blobs: BlobStore, store_id: str) -> _StoreCheck:
    check = _StoreCheck()
    for grant in await index.list_grants(store_id):
        check.entries.append(("grant", grant, ""))
    async for meta in records_of(index, store_id):
        check.records += 1
        check.size += meta.size
        if meta.blob_id is not None:
            check.blob_ids.append(meta.blob_id)
        sha, finding = await _check_body(index, blobs, store_id, meta)
        if finding is not None:
            check.findings.append(finding)
        check.entries.append(("record", meta, sha))
    return check


async def _check_body(
    index: MetadataIndex, blobs: BlobStore, store_id: str, meta: RecordMeta
) -> tuple[str, Finding | None]:
    """The body's SHA-256, and what is wrong with it if anything."""
    digest = hashlib.sha256()
    size = 0
    try:
        async for chunk in body_of(blobs, meta):
            digest.update(chunk)
            size += len(chunk)
    except StorageError as e:
        fresh = await index.get_record(store_id, meta.key)
        if fresh is None or fresh.etag != meta.etag:
            return "", None  # replaced or deleted meanwhile: the store reads as changed
        return "", Finding(MISSING, store_id, meta.key, f"blob {meta.blob_id}: {e.message}")
    if size != meta.size:
        return digest.hexdigest(), Finding(WRONG_SIZE, store_id, meta.key, f"{size} bytes stored, {meta.size} recorded")
    return digest.hexdigest(), None


async def _orphans(index: MetadataIndex, blobs: BlobStore, referenced: set[str], before_ms: int) -> list[str]:
    candidates = [b async for b in blobs.list_ids(older_than_ms=before_ms) if b not in referenced]
    orphans: list[str] = []
    for i in range(0, len(candidates), _CHUNK):
        chunk = candidates[i : i + _CHUNK]
        # Rows written after the walk, and rows of deleted stores awaiting their purge, count too.
        kept = await index.referenced_blob_ids(chunk)
        orphans.extend(b for b in chunk if b not in kept)
    return orphans
