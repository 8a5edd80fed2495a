"""The only module that names concrete backends."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from kvbox.backends.base import BlobStore, MetadataIndex

if TYPE_CHECKING:
    from kvbox.backends.postgres.metadata import PostgresMetadataIndex

BACKENDS = ("sqlite", "postgres", "memory")
_POSTGRES_SCHEMES = ("postgresql", "postgres")


def backend_kind(kind: str, *, metadata_url: str | None = None, blob_url: str | None = None) -> str:
    """The backend a set of settings selects: a metadata URL means postgres (with S3 bodies)."""
    if kind not in BACKENDS:
        raise ValueError(f"unknown backend {kind!r} (choose {', '.join(BACKENDS)})")
    if metadata_url or blob_url or kind == "postgres":
        if kind == "memory":
            raise ValueError("the memory backend takes no --metadata-url or --blob-url")
        if not metadata_url or urlsplit(metadata_url).scheme not in _POSTGRES_SCHEMES:
            raise ValueError("the postgres backend needs --metadata-url postgresql://USER@HOST/DATABASE")
        if not blob_url or urlsplit(blob_url).scheme != "s3":
            raise ValueError("the postgres backend needs --blob-url s3://BUCKET/PREFIX for record bodies")
        return "postgres"
    return kind


def open_backend(
    kind: str,
    *,
    data_dir: Path,
    durable: bool,
    metadata_url: str | None = None,
    blob_url: str | None = None,
    s3_endpoint: str | None = None,
    pool_size: int = 10,
) -> tuple[MetadataIndex, BlobStore]:
    """Open (creating when missing) the metadata index and blob store of one deployment.

    Nothing here connects yet for postgres + S3: connections open inside the event loop
    of the process that first uses them (each server worker builds its own).
    """
    kind = backend_kind(kind, metadata_url=metadata_url, blob_url=blob_url)
    if kind == "memory":
        from kvbox.backends.memory import MemoryBlobStore, MemoryMetadataIndex

        return MemoryMetadataIndex(), MemoryBlobStore()
    if kind == "postgres":
        try:
            from kvbox.backends.postgres.metadata import PostgresMetadataIndex
            from kvbox.backends.s3.blobs import S3BlobStore
        except ImportError as e:
            raise ValueError(
                f"the postgres backend needs the postgres extra: pip install 'kvbox[postgres]' ({e})"
            ) from e

        assert metadata_url is not None and blob_url is not None  # checked by backend_kind
        return (
            PostgresMetadataIndex(metadata_url, pool_size=pool_size),
            S3BlobStore.from_url(blob_url, endpoint=s3_endpoint),
        )
    from kvbox.backends.sqlite.blobs import FileBlobStore
    from kvbox.backends.sqlite.metadata import SqliteMetadataIndex

    data_dir.mkdir(parents=True, exist_ok=True)
    return (
        SqliteMetadataIndex(data_dir / "kvbox.sqlite3", durable=durable),
        FileBlobStore(data_dir / "blobs", durable=durable),
    )


async def migrate_index(index: MetadataIndex) -> tuple[int, int]:
    """Create or upgrade the index schema; returns (version found, version now).

    SQLite migrates whenever it opens, so there this only reports the version.
    """
    from kvbox.backends.sqlite.metadata import SqliteMetadataIndex

    postgres = _postgres(index)
    if postgres is not None:
        return await postgres.migrate()
    if isinstance(index, SqliteMetadataIndex):
        from kvbox.backends.sqlite.schema import SCHEMA_VERSION

        return SCHEMA_VERSION, SCHEMA_VERSION
    return 0, 0


@asynccontextmanager
async def exclusive(index: MetadataIndex, name: str) -> AsyncIterator[bool]:
    """Run a block on one node at a time: yields whether this process holds the lock `name`.

    PostgreSQL deployments take an advisory lock shared by every node; the embedded and
    memory backends live on one host, where every holder may run (their work is idempotent).
    """
    postgres = _postgres(index)
    if postgres is not None:
        async with postgres.exclusive(name) as got:
            yield got
    else:
        yield True


def _postgres(index: MetadataIndex) -> PostgresMetadataIndex | None:
    # Without the postgres extra installed the module was never imported: nothing is postgres.
    module = sys.modules.get("kvbox.backends.postgres.metadata")
    if module is not None and isinstance(index, module.PostgresMetadataIndex):
        found: PostgresMetadataIndex = index
        return found
    return None


def describe_url(url: str) -> str:
    """A URL fit for logs: the password is replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
