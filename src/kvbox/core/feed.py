"""The change feed's domain: one committed record change of a store, and a page of them.

Every committed record change gets the store's next sequence number in the same transaction
as the change (extensions.md section 4), so a reader following `after` never sees a later
sequence before an earlier one commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from kvbox.core.frozen import fast_init


class EventType(StrEnum):
    CREATED = "RECORD.CREATED"
    UPDATED = "RECORD.UPDATED"
    DELETED = "RECORD.DELETED"
    EXPIRED = "RECORD.EXPIRED"


EVENT_TYPES: tuple[str, ...] = tuple(e.value for e in EventType)
# Longest wait of a long-poll, and the largest page.
MAX_WAIT_S = 60
MAX_CHANGES_PAGE = 1000


@fast_init
@dataclass(frozen=True, slots=True)
class Change:
    """One record change. The record fields are those after the change (None for deletions)."""

    sequence: int
    event_type: str
    key: str
    etag: str | None
    size: int | None
    content_type: str | None
    created_at: int


@fast_init
@dataclass(frozen=True, slots=True)
class ChangePage:
    """Changes after a cursor, in sequence order, with what the log holds of the store:
    `oldest` is the oldest sequence still kept (`latest + 1` when none is), `latest` the
    store's last sequence."""

    items: list[Change]
    oldest: int
    latest: int

    def missed(self, after: int) -> bool:
        """Whether changes after `after` were dropped from the log (retention): 410."""
        return after < self.oldest - 1


def write_events(*, replaced: bool, hidden: bool, expired: bool) -> tuple[str, ...]:
    """The events of a record write, in order: a write over a row that readers no longer saw
    (hidden by a delete by prefix, or expired) first closes that record's story, so every
    record a consumer saw appear also disappears."""
    if not replaced:
        return (EventType.CREATED,)
    if hidden:
        return (EventType.DELETED, EventType.CREATED)
    if expired:
        return (EventType.EXPIRED, EventType.CREATED)
    return (EventType.UPDATED,)
