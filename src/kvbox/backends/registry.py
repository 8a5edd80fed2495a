"""The only module that names concrete backends."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from kvbox.backends.base import BlobStore, MetadataIndex
from kvbox.backends.sqlite import backup as sqlite_backup
from kvbox.backends.sqlite.backup import BackupReport, Progress
from kvbox.core.errors import StorageError

__all__ = [
    "BACKENDS",
    "BackupReport",
    "Progress",
    "backend_kind",
    "backup_data_dir",
    "open_backend",
    "restore_data_dir",
]

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
    changes: bool = True,
) -> tuple[MetadataIndex, BlobStore]:
    """Open (creating when missing) the metadata index and blob store of one deployment.

    Nothing here connects yet for postgres + S3: connections open inside the event loop
    of the process that first uses them (each server worker builds its own). With
    `changes=False` the index logs no record changes (the change feed is off).
    """
    kind = backend_kind(kind, metadata_url=metadata_url, blob_url=blob_url)
    # Declared once, assigned per backend: mypy checks each class against the whole protocol.
    index: MetadataIndex
    blobs: BlobStore
    if kind == "memory":
        from kvbox.backends.memory import MemoryBlobStore, MemoryMetadataIndex

        index, blobs = MemoryMetadataIndex(changes=changes), MemoryBlobStore()
        return index, blobs
    if kind == "postgres":
        try:
            from kvbox.backends.postgres.metadata import PostgresMetadataIndex
            from kvbox.backends.s3.blobs import S3BlobStore
        except ImportError as e:
            raise ValueError(
                f"the postgres backend needs the postgres extra: pip install 'kvbox[postgres]' ({e})"
            ) from e

        assert metadata_url is not None and blob_url is not None  # checked by backend_kind
        index = PostgresMetadataIndex(metadata_url, pool_size=pool_size, changes=changes)
        blobs = S3BlobStore.from_url(blob_url, endpoint=s3_endpoint)
        return index, blobs
    from kvbox.backends.sqlite.blobs import FileBlobStore
    from kvbox.backends.sqlite.metadata import SqliteMetadataIndex

    _writable_dir(data_dir)
    index = SqliteMetadataIndex(data_dir / "kvbox.sqlite3", durable=durable, changes=changes)
    blobs = FileBlobStore(data_dir / "blobs", durable=durable)
    return index, blobs


def _writable_dir(data_dir: Path) -> None:
    """Create the data directory if needed and prove it writable, or say plainly why not
    (SQLite would only report "unable to open database file")."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".kvbox-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        why = {errno.EROFS: "is on a read-only file system", errno.EACCES: "is not writable by this user",
               errno.EPERM: "is not writable by this user", errno.ENOSPC: "is on a full disk"}  # fmt: skip
        reason = why.get(e.errno or 0, f"cannot be written ({e.strerror})")
        raise StorageError(
            f"The data directory {data_dir} {reason}: kvbox keeps its database and record files there. "
            "Choose another one with --data-dir (KVBOX_DATA_DIR)."
        ) from e


def describe_url(url: str) -> str:
    """A URL fit for logs: the password is replaced."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def backup_data_dir(data_dir: Path, dest: Path, *, created_by: str, progress: Progress | None = None) -> BackupReport:
    """A consistent backup of an embedded data directory, taken while servers run
    (see backends/sqlite/backup.py)."""
    return sqlite_backup.backup(data_dir, dest, created_by=created_by, progress=progress)


def restore_data_dir(source: Path, data_dir: Path) -> BackupReport:
    """Make `data_dir` (missing or empty) a copy of a backup made by `backup_data_dir`."""
    return sqlite_backup.restore(source, data_dir)
