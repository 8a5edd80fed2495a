"""What the SDK returns besides values: store metadata and record metadata."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class StoreMetadata:
    """A store's identity and timestamps (crawlee's `KeyValueStoreMetadata`)."""

    id: str
    name: str | None
    created_at: datetime | None
    accessed_at: datetime | None
    modified_at: datetime | None


@dataclass(slots=True)
class RecordMetadata:
    """One key of a listing (crawlee's `KeyValueStoreRecordMetadata`), with its last write and
    when it expires (None: it does not).

    In remote mode against a server that lists only keys and sizes (the Apify platform), the
    other fields are None.
    """

    key: str
    size: int | None
    content_type: str | None = None
    modified_at: datetime | None = None
    expires_at: datetime | None = None
