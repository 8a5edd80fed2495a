"""The only module that names concrete backends."""

from __future__ import annotations

from pathlib import Path

from kvbox.backends.base import BlobStore, MetadataIndex


def open_backend(kind: str, *, data_dir: Path, durable: bool) -> tuple[MetadataIndex, BlobStore]:
    """Open (creating when missing) the metadata index and blob store of one deployment."""
    if kind == "memory":
        from kvbox.backends.memory import MemoryBlobStore, MemoryMetadataIndex

        return MemoryMetadataIndex(), MemoryBlobStore()
    if kind == "sqlite":
        from kvbox.backends.sqlite.blobs import FileBlobStore
        from kvbox.backends.sqlite.metadata import SqliteMetadataIndex

        data_dir.mkdir(parents=True, exist_ok=True)
        return (
            SqliteMetadataIndex(data_dir / "kvbox.sqlite3", durable=durable),
            FileBlobStore(data_dir / "blobs", durable=durable),
        )
    raise ValueError(f"unknown backend {kind!r} (choose sqlite or memory)")
