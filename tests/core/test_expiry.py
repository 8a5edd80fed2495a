"""When a record is gone (core/expiry.py): own expiry, store rules, replaced rules, parsing."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvbox.core.errors import InvalidValueError
from kvbox.core.expiry import (
    MAX_RETIRED,
    expires_at,
    forget_retired,
    is_gone,
    parse_record_expiry,
    parse_rules,
    replace_rules,
    rule_for,
    rules_view,
    sorted_rules,
    subsumes,
)
from kvbox.core.models import NO_EXPIRY, ExpiryRule, RecordExpiry, RetiredRules

T0 = 1_767_225_600_000
S = 1000  # one second in ms


def rules(*pairs: tuple[str, int]) -> tuple[ExpiryRule, ...]:
    return sorted_rules([ExpiryRule(p, n) for p, n in pairs])


def test_longest_prefix_wins_and_own_expiry_wins_over_rules() -> None:
    expiry = RecordExpiry(rules(("", 100), ("tmp-", 10), ("tmp-keep-", 1000)))
    assert rule_for(expiry.rules, "tmp-keep-1") == ExpiryRule("tmp-keep-", 1000)
    assert rule_for(expiry.rules, "tmp-1") == ExpiryRule("tmp-", 10)
    assert rule_for(expiry.rules, "other") == ExpiryRule("", 100)
    assert expires_at(expiry, "tmp-1", T0, None) == T0 + 10 * S
    assert expires_at(expiry, "tmp-1", T0, T0 + 5) == T0 + 5
    assert expires_at(NO_EXPIRY, "tmp-1", T0, None) is None
    assert expires_at(RecordExpiry(rules(("a", 1))), "b", T0, None) is None


def test_gone_from_the_expiry_instant_on() -> None:
    expiry = RecordExpiry(rules(("tmp-", 10)))
    assert not is_gone(expiry, "tmp-1", T0, None, T0 + 10 * S - 1)
    assert is_gone(expiry, "tmp-1", T0, None, T0 + 10 * S)
    assert not is_gone(expiry, "keep", T0, None, T0 + 10**9)
    assert not is_gone(NO_EXPIRY, "k", T0, T0 + 5, T0 + 4)
    assert is_gone(NO_EXPIRY, "k", T0, T0 + 5, T0 + 5)
    # An own expiry later than the rule's keeps the record.
    assert not is_gone(expiry, "tmp-1", T0, T0 + 20 * S, T0 + 15 * S)


def test_what_a_rule_expired_stays_gone_when_the_rule_goes() -> None:
    expiry = RecordExpiry(rules(("", 3600)))
    now = T0 + 2 * 3600 * S
    assert is_gone(expiry, "old", T0, None, now)
    loosened = replace_rules(expiry, (), now)
    assert loosened.rules == () and loosened.retired == (RetiredRules(expiry.rules, now),)
    assert is_gone(loosened, "old", T0, None, now + 1)
    # A record written after the change is not touched by the retired rules.
    assert not is_gone(loosened, "new", now - 1800 * S, None, now + 10**9)
    # Once the sweeper went through the store, the retired set is forgotten.
    assert forget_retired(loosened, now + 1).retired == ()
    assert forget_retired(loosened, now).retired == loosened.retired


def test_only_loosening_retires_rules() -> None:
    expiry = RecordExpiry(rules(("", 100)))
    assert replace_rules(NO_EXPIRY, rules(("", 100)), T0).retired == ()  # a first rule
    assert replace_rules(expiry, rules(("", 50)), T0).retired == ()  # shortened
    assert replace_rules(expiry, rules(("", 50), ("a", 70)), T0).retired == ()
    assert replace_rules(expiry, rules(("", 100), ("a", 200)), T0).retired != ()  # "a..." now lasts longer
    assert replace_rules(expiry, rules(("a", 10)), T0).retired != ()  # "b..." no longer expires
    # A retired set that the rules now in force cover again is dropped.
    loose = replace_rules(expiry, (), T0)
    assert replace_rules(loose, rules(("", 100)), T0 + 1).retired == ()


def test_too_many_loosenings_are_refused() -> None:
    expiry = NO_EXPIRY
    for i in range(MAX_RETIRED + 1):
        expiry = replace_rules(expiry, rules(("", 100 + i)), T0 + i)
    assert len(expiry.retired) == MAX_RETIRED
    with pytest.raises(InvalidValueError):
        replace_rules(expiry, rules(("", 1000)), T0 + 100)


prefixes = st.sampled_from(["", "a", "ab", "abc", "b", "ba"])
rule_sets = st.lists(st.tuples(prefixes, st.integers(1, 50)), max_size=4, unique_by=lambda t: t[0]).map(
    lambda pairs: rules(*pairs)
)
keys = st.text(alphabet="abc", min_size=1, max_size=4)


@given(old=rule_sets, new=rule_sets, key=keys, age=st.integers(0, 100), later=st.integers(0, 100))
def test_replacing_rules_never_brings_a_record_back(
    old: tuple[ExpiryRule, ...], new: tuple[ExpiryRule, ...], key: str, age: int, later: int
) -> None:
    modified, change = T0, T0 + age * S
    before = RecordExpiry(old)
    after = replace_rules(before, new, change)
    if is_gone(before, key, modified, None, change):
        assert is_gone(after, key, modified, None, change + later * S)
    if subsumes(new, old):
        assert after.retired == ()


@pytest.mark.parametrize(
    ("expires_in", "expires_at_iso", "want"),
    [
        ("3600", None, T0 + 3600 * S),
        ("1", None, T0 + S),
        ("315360000", None, T0 + 315360000 * S),
        (None, "2026-01-01T01:00:00.000Z", T0 + 3600 * S),
        (None, "2026-01-01T01:00:00Z", T0 + 3600 * S),
        (None, "2026-01-01T02:00:00+01:00", T0 + 3600 * S),
        (None, "2026-01-01T01:00:00", T0 + 3600 * S),  # no offset: UTC
        (None, None, None),
    ],
)
def test_record_expiry_parameters(expires_in: str | None, expires_at_iso: str | None, want: int | None) -> None:
    assert parse_record_expiry(expires_in, expires_at_iso, T0) == want


@pytest.mark.parametrize(
    ("expires_in", "expires_at_iso"),
    [
        ("0", None),
        ("-5", None),
        ("abc", None),
        ("1.5", None),
        ("", None),
        ("315360001", None),
        ("--5", None),
        (None, "2025-12-31T23:59:59.000Z"),  # in the past
        (None, "2026-01-01T00:00:00.000Z"),  # now is not the future
        (None, "tomorrow"),
        (None, ""),
        ("60", "2030-01-01T00:00:00Z"),  # both
    ],
)
def test_bad_record_expiry_parameters(expires_in: str | None, expires_at_iso: str | None) -> None:
    with pytest.raises(InvalidValueError):
        parse_record_expiry(expires_in, expires_at_iso, T0)


def test_rules_parse_and_show() -> None:
    parsed = parse_rules([{"prefix": "tmp-", "expireAfterSecs": 60}, {"prefix": "", "expireAfterSecs": 86400}])
    assert parsed == (ExpiryRule("tmp-", 60), ExpiryRule("", 86400))  # longest prefix first
    assert rules_view(parsed) == [{"prefix": "", "expireAfterSecs": 86400}, {"prefix": "tmp-", "expireAfterSecs": 60}]
    assert parse_rules([]) == ()
    assert parse_rules([{"expireAfterSecs": 5}]) == (ExpiryRule("", 5),)  # the prefix defaults to ""


@pytest.mark.parametrize(
    "value",
    [
        None,
        "1d",
        {"prefix": "", "expireAfterSecs": 60},
        [{"prefix": "", "expireAfterSecs": 0}],
        [{"prefix": "", "expireAfterSecs": -5}],
        [{"prefix": "", "expireAfterSecs": "60"}],
        [{"prefix": "", "expireAfterSecs": 1.5}],
        [{"prefix": "", "expireAfterSecs": True}],
        [{"prefix": "", "expireAfterSecs": 315360001}],
        [{"prefix": ""}],
        [{"prefix": 5, "expireAfterSecs": 60}],
        [{"prefix": "a/b", "expireAfterSecs": 60}],
        [{"prefix": "x" * 257, "expireAfterSecs": 60}],
        [{"prefix": "", "expireAfterSecs": 60, "other": 1}],
        ["rule"],
        [{"prefix": "a", "expireAfterSecs": 60}, {"prefix": "a", "expireAfterSecs": 70}],
        [{"prefix": f"p{i}", "expireAfterSecs": 60} for i in range(21)],
    ],
)
def test_bad_rules(value: Any) -> None:
    with pytest.raises(InvalidValueError):
        parse_rules(value)


def test_twenty_rules_are_allowed() -> None:
    assert len(parse_rules([{"prefix": f"p{i}", "expireAfterSecs": 60} for i in range(20)])) == 20
