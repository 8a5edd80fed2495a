"""Every backend class implements the whole of its protocol, with the same call shapes.

mypy checks the same statically where `backends/registry.py` assigns each class to a
protocol-typed name; this catches a class that is not (yet) wired there.
"""

from __future__ import annotations

import inspect
from typing import Any, get_type_hints

import pytest

from kvbox.backends.base import BlobStore, BlobWriter, MetadataIndex
from kvbox.backends.memory import MemoryBlobStore, MemoryMetadataIndex
from kvbox.backends.postgres.metadata import PostgresMetadataIndex
from kvbox.backends.s3.blobs import S3BlobStore
from kvbox.backends.sqlite.blobs import FileBlobStore
from kvbox.backends.sqlite.metadata import SqliteMetadataIndex

BLOB_STORES: list[type[MemoryBlobStore | FileBlobStore | S3BlobStore]] = [MemoryBlobStore, FileBlobStore, S3BlobStore]
IMPLEMENTATIONS: list[tuple[type, type]] = [
    *((MetadataIndex, cls) for cls in (MemoryMetadataIndex, SqliteMetadataIndex, PostgresMetadataIndex)),
    *((BlobStore, cls) for cls in BLOB_STORES),
    *((BlobWriter, get_type_hints(cls.create)["return"]) for cls in BLOB_STORES),
]


def members(protocol: type) -> dict[str, Any]:
    return {name: value for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")}


def shape(function: Any) -> tuple[bool, list[tuple[str, Any]]]:
    """Whether calling it needs an await, and its parameters by name and kind."""
    parameters = [(p.name, p.kind) for p in inspect.signature(function).parameters.values()]
    return inspect.iscoroutinefunction(function), parameters


@pytest.mark.parametrize(("protocol", "cls"), IMPLEMENTATIONS, ids=lambda c: c.__name__)
def test_backend_implements_every_protocol_member(protocol: type, cls: type) -> None:
    missing = [name for name in members(protocol) if not hasattr(cls, name)]
    assert not missing, f"{cls.__name__} lacks {missing} of {protocol.__name__}"
    for name, declared in members(protocol).items():
        assert shape(getattr(cls, name)) == shape(declared), f"{cls.__name__}.{name} differs from the protocol"


def test_every_index_capability_is_declared() -> None:
    """What the services rely on beyond plain reads and writes is part of the contract."""
    assert {"migrate", "exclusive", "read_generation", "metadata_generation"} <= set(members(MetadataIndex))
