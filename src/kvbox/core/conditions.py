"""Conditional requests (RFC 9110 section 13): entity-tag lists, write conditions, and the
preconditions of a read.

Pure: header values in, decisions out. A write's condition becomes a `Condition` that the
index checks in the same step as the change; a read's preconditions are checked against
the record that is about to be sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from kvbox.core.clock import parse_http_date
from kvbox.core.errors import PreconditionFailedError
from kvbox.core.frozen import fast_init
from kvbox.core.models import Condition

ANY: Final = "*"
WEAK_PREFIX = "W/"
# One element of an entity-tag list: `"opaque"`, `W/"opaque"`, or (leniently, as S3 takes
# it) a bare token; RFC 9110's etagc excludes the double quote, space and controls.
_ELEMENT = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"|([\x21\x23-\x2b\x2d-\x7e\x80-\xff]+)')


def parse_etags(value: str | None) -> tuple[str, ...] | str | None:
    """An `If-Match` / `If-None-Match` / `If-Range` value: None when absent or blank, `ANY`
    for `*`, else the tags without quotes (a weak tag keeps its `W/` prefix).

    A list that does not parse gives `()`, which matches no record: a condition the server
    cannot read never lets a write through.
    """
    if value is None or not value.strip():
        return None
    if value.strip() == ANY:
        return ANY
    tags: list[str] = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue  # RFC 9110 lists may hold empty elements
        found = _ELEMENT.fullmatch(part)
        if found is None:
            return ()
        weak, quoted, bare = found.groups()
        tags.append((WEAK_PREFIX if weak else "") + (quoted if quoted is not None else bare))
    return tuple(tags)


def _strong(tags: tuple[str, ...]) -> tuple[str, ...]:
    """The tags strong comparison can match (a weak tag never matches)."""
    return tuple(t for t in tags if not t.startswith(WEAK_PREFIX))


def _weak(tags: tuple[str, ...]) -> tuple[str, ...]:
    """The tags weak comparison compares: every tag, `W/` dropped."""
    return tuple(t.removeprefix(WEAK_PREFIX) for t in tags)


def write_condition(if_match: str | None, if_none_match: str | None) -> Condition | None:
    """The condition of a PUT, POST or DELETE from its `If-Match` and `If-None-Match`; None
    when it has neither (the write is unconditional)."""
    match, none_match = parse_etags(if_match), parse_etags(if_none_match)
    if match is None and none_match is None:
        return None
    return Condition(
        if_match=_strong(match) if isinstance(match, tuple) else None,
        if_none_match=_weak(none_match) if isinstance(none_match, tuple) else None,
        must_exist=match == ANY,
        must_not_exist=none_match == ANY,
    )


@fast_init
@dataclass(frozen=True, slots=True)
class ReadConditions:
    """The preconditions of a GET or HEAD, as their header values (None: absent)."""

    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None

    def not_modified(self, etag: str, modified_at_ms: int) -> bool:
        """Whether to answer 304 instead of the record; raises `PreconditionFailedError` (412)
        when `If-Match` names none of its tags. Evaluated in RFC 9110's order (13.2.2)."""
        match = parse_etags(self.if_match)
        if isinstance(match, tuple) and etag not in _strong(match):
            raise PreconditionFailedError("The record's ETag matches none in If-Match.")
        none_match = parse_etags(self.if_none_match)
        if none_match is not None:  # `*` or a list
            return not isinstance(none_match, tuple) or etag in _weak(none_match)
        if self.if_modified_since is not None:
            since = parse_http_date(self.if_modified_since)
            # Last-Modified has whole seconds, so the comparison does too.
            return since is not None and modified_at_ms // 1000 <= since
        return False


def if_range_holds(if_range: str | None, etag: str) -> bool:
    """Whether a `Range` may be honoured under `If-Range`: yes without one, or when it is the
    record's own strong ETag. A date or any other tag sends the whole record (RFC 9110 13.1.5:
    only a strong validator may allow a range, and a one-second Last-Modified is not one)."""
    if if_range is None:
        return True
    tags = parse_etags(if_range)
    return isinstance(tags, tuple) and tags == (etag,)
