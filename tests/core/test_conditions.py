"""Conditional requests in core: entity-tag lists, write conditions and read preconditions."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvbox.core.conditions import ANY, ReadConditions, if_range_holds, parse_etags, write_condition
from kvbox.core.errors import PreconditionFailedError
from kvbox.core.models import Condition, RecordMeta

T0 = 1_767_225_600_000  # a whole second
LAST_MODIFIED = "Thu, 01 Jan 2026 00:00:00 GMT"


def row(etag: str = "abc") -> RecordMeta:
    return RecordMeta(key="k", content_type="text/plain", encoding="identity", size=1, etag=etag, modified_at=T0)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("*", ANY),
        (" * ", ANY),
        ('"abc"', ("abc",)),
        ('"a", W/"b" ,,"c"', ("a", "W/b", "c")),
        ('""', ("",)),
        ("abc", ("abc",)),  # a bare tag, as S3 takes it
        ('"a" "b"', ()),  # no comma between two tags: unreadable, matches nothing
        ('"abc', ()),
        ("W/abc", ("W/abc",)),  # read as a weak tag
        ('"a,b"', ()),
        ("a b", ()),
    ],
)
def test_parse_etags(value: str | None, parsed: object) -> None:
    assert parse_etags(value) == parsed


@pytest.mark.parametrize(
    ("if_match", "if_none_match", "condition"),
    [
        (None, None, None),
        ("*", None, Condition(must_exist=True)),
        (None, "*", Condition(must_not_exist=True)),
        ('"a", W/"b"', None, Condition(if_match=("a",))),  # strong comparison: a weak tag never matches
        (None, '"a", W/"b"', Condition(if_none_match=("a", "b"))),  # weak comparison
        ('"a', None, Condition(if_match=())),  # unreadable: matches nothing, so refuses
        ("*", "*", Condition(must_exist=True, must_not_exist=True)),
    ],
)
def test_write_condition(if_match: str | None, if_none_match: str | None, condition: Condition | None) -> None:
    assert write_condition(if_match, if_none_match) == condition


@pytest.mark.parametrize(
    ("condition", "missing", "present"),
    [
        (Condition(), True, True),
        (Condition(must_exist=True), False, True),
        (Condition(must_not_exist=True), True, False),
        (Condition(if_match=("abc",)), False, True),
        (Condition(if_match=("x", "abc")), False, True),
        (Condition(if_match=("x",)), False, False),
        (Condition(if_match=()), False, False),
        (Condition(if_none_match=("abc",)), True, False),
        (Condition(if_none_match=("x",)), True, True),
    ],
)
def test_condition_holds(condition: Condition, missing: bool, present: bool) -> None:
    assert (condition.holds(None), condition.holds(row("abc"))) == (missing, present)


@given(st.lists(st.text("abcdef0123456789", min_size=1, max_size=8), max_size=4), st.text("abcdef", max_size=3))
def test_if_match_lists_round_trip(tags: list[str], etag: str) -> None:
    header = ", ".join(f'"{t}"' for t in tags)
    condition = write_condition(header or None, None)
    if not tags:
        assert condition is None
        return
    assert condition is not None
    assert condition.holds(row(etag)) == (etag in tags)
    assert not condition.holds(None)


@pytest.mark.parametrize(
    ("conditions", "not_modified"),
    [
        (ReadConditions(), False),
        (ReadConditions(if_none_match='"abc"'), True),
        (ReadConditions(if_none_match='W/"abc"'), True),
        (ReadConditions(if_none_match="*"), True),
        (ReadConditions(if_none_match='"other"'), False),
        (ReadConditions(if_none_match='"abc'), False),  # unreadable: matches nothing
        (ReadConditions(if_match='"abc"'), False),
        (ReadConditions(if_match="*"), False),
        (ReadConditions(if_modified_since=LAST_MODIFIED), True),
        (ReadConditions(if_modified_since="Wed, 31 Dec 2025 23:59:59 GMT"), False),
        (ReadConditions(if_modified_since="Fri, 02 Jan 2026 00:00:00 GMT"), True),
        (ReadConditions(if_modified_since="yesterday"), False),  # not a date: ignored
        # If-None-Match decides alone when both are there (RFC 9110 13.2.2).
        (ReadConditions(if_none_match='"other"', if_modified_since=LAST_MODIFIED), False),
    ],
)
def test_read_conditions(conditions: ReadConditions, not_modified: bool) -> None:
    assert conditions.not_modified("abc", T0 + 999) is not_modified


@pytest.mark.parametrize("if_match", ['"other"', 'W/"abc"', '"abc', ""])
def test_if_match_on_a_read_fails_unless_a_tag_matches(if_match: str) -> None:
    conditions = ReadConditions(if_match=if_match, if_none_match='"abc"')
    if if_match == "":  # blank: as if absent
        assert conditions.not_modified("abc", T0)
        return
    with pytest.raises(PreconditionFailedError):
        conditions.not_modified("abc", T0)


@pytest.mark.parametrize(
    ("if_range", "holds"),
    [
        (None, True),
        ('"abc"', True),
        ("abc", True),
        ('"other"', False),
        ('W/"abc"', False),
        ('"abc", "other"', False),
        (LAST_MODIFIED, False),  # a date is never a strong validator here
        ("", False),
    ],
)
def test_if_range(if_range: str | None, holds: bool) -> None:
    assert if_range_holds(if_range, "abc") is holds


HEADER_TEXT = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=60)


@given(HEADER_TEXT, HEADER_TEXT, HEADER_TEXT, HEADER_TEXT)
def test_any_header_value_gets_an_answer_never_a_crash(
    if_match: str, if_none_match: str, if_modified_since: str, if_range: str
) -> None:
    """Whatever a client sends, the answer is one RFC 9110 allows: 200, 304 or 412."""
    with contextlib.suppress(PreconditionFailedError):
        ReadConditions(if_match, if_none_match, if_modified_since).not_modified("abc", T0)
    if_range_holds(if_range, "abc")
    condition = write_condition(if_match, if_none_match)
    if condition is not None:
        condition.holds(row("abc"))
        condition.holds(None)
