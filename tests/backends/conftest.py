"""The `index` and `blobs` fixtures: every backend's implementation of each contract.

The scale-out pair gets a fresh PostgreSQL schema (migrated as `kvbox migrate` does) and a
fresh key prefix in the S3 bucket per test, on the session's `scale_out` services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from backing_services import ScaleOut
from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.backends.memory import MemoryBlobStore, MemoryMetadataIndex
from kvbox.backends.postgres.metadata import PostgresMetadataIndex
from kvbox.backends.s3.blobs import S3BlobStore
from kvbox.backends.sqlite.blobs import FileBlobStore
from kvbox.backends.sqlite.metadata import SqliteMetadataIndex

INDEXES = ["memory", "sqlite", "postgres"]
BLOB_STORES = ["memory", "files", "s3"]


async def postgres_index(scale_out: ScaleOut, *, pool_size: int = 4) -> PostgresMetadataIndex:
    index = PostgresMetadataIndex(scale_out.settings()["metadata_url"], pool_size=pool_size)
    await index.migrate()
    return index


def s3_blobs(scale_out: ScaleOut, **kwargs: int) -> S3BlobStore:
    return S3BlobStore.from_url(scale_out.blob_url(), endpoint=scale_out.s3.endpoint, **kwargs)


@pytest.fixture(params=INDEXES)
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MetadataIndex]:
    ix: MetadataIndex
    if request.param == "memory":
        ix = MemoryMetadataIndex()
    elif request.param == "sqlite":
        ix = SqliteMetadataIndex(tmp_path / "index.sqlite3")
    else:
        ix = await postgres_index(request.getfixturevalue("scale_out"))
    yield ix
    await ix.close()


@pytest.fixture(params=BLOB_STORES)
async def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    """Each blob store, reading in small chunks so that streaming shows."""
    store: BlobStore
    if request.param == "memory":
        store = MemoryBlobStore(chunk_size=4)
    elif request.param == "files":
        store = FileBlobStore(tmp_path / "blobs", chunk_size=4)
    else:
        store = s3_blobs(request.getfixturevalue("scale_out"), chunk_size=4)
    yield store
    await store.close()
