"""A deployment's storage: the one place settings become a metadata index and a blob store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.backends.registry import describe_url, open_backend
from kvbox.service.settings import Settings


def open_storage(settings: Settings) -> tuple[MetadataIndex, BlobStore]:
    """The index and blob store the settings name (see `open_backend`); raises ValueError for
    settings that name no usable backend."""
    return open_backend(
        settings.backend,
        data_dir=settings.data_dir,
        durable=settings.durable,
        metadata_url=settings.metadata_url,
        blob_url=settings.blob_url,
        s3_endpoint=settings.s3_endpoint,
        pool_size=settings.metadata_pool_size,
        changes=settings.changes,
    )


@asynccontextmanager
async def opened_storage(settings: Settings) -> AsyncIterator[tuple[MetadataIndex, BlobStore]]:
    """`open_storage` for one block: both sides are closed when it ends."""
    index, blobs = open_storage(settings)
    try:
        yield index, blobs
    finally:
        await index.close()
        await blobs.close()


async def migrate_storage(settings: Settings) -> tuple[int, int]:
    """Create or upgrade the index schema of a deployment (`kvbox migrate`); returns the
    schema version found and the version now."""
    async with opened_storage(settings) as (index, _):
        return await index.migrate()


def describe_storage(settings: Settings) -> str:
    """One line naming a deployment's storage, without passwords."""
    if settings.metadata_url:
        return f"{describe_url(settings.metadata_url)} + {settings.blob_url}"
    return f"{settings.backend} in {settings.data_dir}"
