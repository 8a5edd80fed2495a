"""Record expiry: when a record stops being visible, and the values that set it.

A record expires at its own expiry (`RecordMeta.expires_at`) when it has one; otherwise at
its last write plus the `expire_after_secs` of the store rule with the longest matching
prefix. From that instant on it is gone for every reader. A record that a store's rules had
expired stays gone when the rules change later: the replaced rules are kept as
`RetiredRules` (with the time they were replaced) until the sweeper has reclaimed what they
hid.

`is_gone` is the one definition every read path uses; the SQL indexes render the same
predicate (backends/statements.py) and the contract tests hold them to it. Times are
milliseconds since the Unix epoch.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from kvbox.core.errors import InvalidValueError
from kvbox.core.keys import KEY_RE, MAX_KEY_LENGTH
from kvbox.core.models import ExpiryRule, RecordExpiry, RetiredRules

MAX_EXPIRE_SECS = 315_360_000  # ten years
MAX_RULES = 20
# Rule changes that can bring back nothing (a rule added or shortened) retire nothing; the
# others wait for the sweeper's next pass over the store. More pending than this is refused.
MAX_RETIRED = 10
_WHOLE = re.compile(r"-?[0-9]{1,12}")


def rule_for(rules: tuple[ExpiryRule, ...], key: str) -> ExpiryRule | None:
    """The rule with the longest prefix of `key` (rules are kept longest prefix first)."""
    for rule in rules:
        if key.startswith(rule.prefix):
            return rule
    return None


def expires_at(expiry: RecordExpiry, key: str, modified_at: int, own: int | None) -> int | None:
    """When the record expires under the rules in force: its own expiry, else its last write
    plus the matching rule's time; None when it does not expire."""
    if own is not None:
        return own
    if not expiry.rules:
        return None
    rule = rule_for(expiry.rules, key)
    return None if rule is None else modified_at + rule.expire_after_secs * 1000


def is_gone(expiry: RecordExpiry, key: str, modified_at: int, own: int | None, now_ms: int) -> bool:
    """Whether the record is expired at `now_ms`, or was expired by rules since replaced."""
    if own is not None:
        return own <= now_ms
    if not expiry.rules and not expiry.retired:
        return False
    rule = rule_for(expiry.rules, key)
    if rule is not None and modified_at + rule.expire_after_secs * 1000 <= now_ms:
        return True
    for old in expiry.retired:
        rule = rule_for(old.rules, key)
        if rule is not None and modified_at + rule.expire_after_secs * 1000 <= old.retired_at:
            return True
    return False


def stale_before(expiry: RecordExpiry, key: str, now_ms: int) -> int | None:
    """`is_gone` for a record of `key` without its own expiry as one comparison: it is gone at
    `now_ms` exactly when it was last written at or before the time returned; None when the
    rules (in force or retired) expire nothing under `key`."""
    cut: int | None = None
    rule = rule_for(expiry.rules, key)
    if rule is not None:
        cut = now_ms - rule.expire_after_secs * 1000
    for old in expiry.retired:
        rule = rule_for(old.rules, key)
        if rule is not None:
            at = old.retired_at - rule.expire_after_secs * 1000
            cut = at if cut is None else max(cut, at)
    return cut


def sorted_rules(rules: list[ExpiryRule] | tuple[ExpiryRule, ...]) -> tuple[ExpiryRule, ...]:
    """Rules in the order `rule_for` needs: longest prefix first (ties cannot occur, prefixes
    are unique; the prefix breaks them anyway for a stable order)."""
    return tuple(sorted(rules, key=lambda r: (-len(r.prefix), r.prefix)))


def _after_secs(rules: tuple[ExpiryRule, ...], prefix: str) -> float:
    rule = rule_for(rules, prefix)
    return float("inf") if rule is None else rule.expire_after_secs


def subsumes(new: tuple[ExpiryRule, ...], old: tuple[ExpiryRule, ...]) -> bool:
    """Whether every key expires no later under `new` than under `old`, so that whatever `old`
    had expired is expired under `new` too.

    The keys fall into regions by their longest matching prefix among both rule sets; in each
    region both sets give one time, the one of the longest rule that prefixes the region's
    prefix. Keys matching neither set never expire under either.
    """
    return all(_after_secs(new, p) <= _after_secs(old, p) for p in {r.prefix for r in (*new, *old)})


def replace_rules(expiry: RecordExpiry, rules: tuple[ExpiryRule, ...], now_ms: int) -> RecordExpiry:
    """The store's expiry after its rules become `rules` at `now_ms`.

    The old rules are retired unless the new ones expire everything they did; retired sets
    the new rules cover are dropped. Raises `InvalidValueError` when too many retired sets
    would wait for the sweeper.
    """
    rules = sorted_rules(rules)
    retired = list(expiry.retired)
    if expiry.rules and not subsumes(rules, expiry.rules):
        retired.append(RetiredRules(expiry.rules, now_ms))
    retired = [r for r in retired if not subsumes(rules, r.rules)]
    if len(retired) > MAX_RETIRED:
        raise InvalidValueError(
            "Invalid value provided: the store's expiry rules were loosened too many times since the sweeper "
            "last went through its records; try again in a few minutes."
        )
    return RecordExpiry(rules, tuple(retired))


def forget_retired(expiry: RecordExpiry, before: int) -> RecordExpiry:
    """The store's expiry without the rule sets retired before `before`: the sweeper has gone
    through every record since, so nothing they hid is left."""
    return RecordExpiry(expiry.rules, tuple(r for r in expiry.retired if r.retired_at >= before))


# parsing what callers send


def parse_record_expiry(expires_in: str | None, expires_at_iso: str | None, now_ms: int) -> int | None:
    """A record's own expiry from `?expiresIn=SECONDS` or `?expiresAt=ISO8601` (not both)."""
    if expires_in is not None and expires_at_iso is not None:
        raise InvalidValueError("Invalid value provided: give expiresIn or expiresAt, not both.")
    if expires_in is not None:
        text = expires_in.strip()
        return now_ms + _seconds("expiresIn", int(text) if _WHOLE.fullmatch(text) else None) * 1000
    if expires_at_iso is not None:
        return _future_instant(expires_at_iso, now_ms)
    return None


def _seconds(name: str, value: Any) -> int:
    """A whole number of seconds in range; JSON gives an int, the query a parsed string."""
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if number is None or not 1 <= number <= MAX_EXPIRE_SECS:
        raise InvalidValueError(
            f"Invalid value provided: {name} must be a whole number of seconds from 1 to {MAX_EXPIRE_SECS}."
        )
    return number


def _future_instant(text: str, now_ms: int) -> int:
    try:
        when = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise InvalidValueError(
            "Invalid value provided: expiresAt must be an ISO 8601 date and time, such as 2030-01-01T00:00:00.000Z."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)  # as the platform writes its timestamps: UTC
    at = int(when.timestamp() * 1000)
    if at <= now_ms:
        raise InvalidValueError("Invalid value provided: expiresAt must be in the future.")
    return at


def parse_rules(value: Any) -> tuple[ExpiryRule, ...]:
    """Store rules from a `recordExpiry` value: a list of `{"prefix", "expireAfterSecs"}`."""
    if not isinstance(value, list):
        raise InvalidValueError("Invalid value provided: recordExpiry must be a list of rules.")
    if len(value) > MAX_RULES:
        raise InvalidValueError(f"Invalid value provided: recordExpiry holds at most {MAX_RULES} rules.")
    rules = [_rule(item) for item in value]
    prefixes = [r.prefix for r in rules]
    if len(set(prefixes)) != len(prefixes):
        raise InvalidValueError("Invalid value provided: every rule of recordExpiry needs its own prefix.")
    return sorted_rules(rules)


def _rule(item: Any) -> ExpiryRule:
    if not isinstance(item, dict) or set(item) - {"prefix", "expireAfterSecs"}:
        raise InvalidValueError(
            'Invalid value provided: each rule of recordExpiry is {"prefix": "...", "expireAfterSecs": N}.'
        )
    prefix = item.get("prefix", "")
    if not isinstance(prefix, str) or len(prefix) > MAX_KEY_LENGTH or (prefix and not KEY_RE.fullmatch(prefix)):
        raise InvalidValueError(
            "Invalid value provided: a rule's prefix must be the start of a record key (up to "
            f"{MAX_KEY_LENGTH} characters of a-z, A-Z, 0-9 and !-_.'()), or empty for every key."
        )
    if "expireAfterSecs" not in item:
        raise InvalidValueError("Invalid value provided: every rule of recordExpiry needs expireAfterSecs.")
    return ExpiryRule(prefix, _seconds("expireAfterSecs", item["expireAfterSecs"]))


def rules_view(rules: tuple[ExpiryRule, ...]) -> list[dict[str, Any]]:
    """Rules as the API shows them (`recordExpiry`), shortest prefix first."""
    return [{"prefix": r.prefix, "expireAfterSecs": r.expire_after_secs} for r in sorted(rules, key=lambda r: r.prefix)]
