"""Column lists and row conversions shared by the SQL backends (SQLite, PostgreSQL).

Both keep users, tokens, grants, stores and records in tables of the same shape, so a row
reads and writes the same way in either. Each list names the columns in the order of the
model's fields; rows are decoded by position (models are built with positional arguments:
rows are decoded on every request and per item in listings), and `*_values` give a
model's values in that same order.
"""

from __future__ import annotations

import json
from typing import Any

from kvbox.core.models import (
    NO_EXPIRY,
    ExpiryRule,
    GeneralAccess,
    Grant,
    KeyItem,
    KeyPage,
    Permission,
    RecordExpiry,
    RecordMeta,
    RetiredRules,
    Store,
    StoreStats,
    Token,
    User,
)

USER_COLUMNS = "id, username, created_at, default_general_access"
TOKEN_COLUMNS = "id, user_id, token_hash, name, created_at, read_only, store_ids"
GRANT_COLUMNS = "store_id, user_id, permission, created_at"
STORE_COLUMNS = (
    "id, name, user_id, created_at, modified_at, accessed_at, url_signing_secret, general_access, "
    "schema_json, read_count, write_count, delete_count, list_count, storage_bytes, record_count, title, "
    "record_expiry"
)
# PostgreSQL's kvbox_put_record returns the replaced row in this order too, `key` aside.
RECORD_COLUMNS = "key, content_type, encoding, size, etag, modified_at, inline_body, blob_id, expires_at"
# A key listing's row: the fields of `KeyItem`, in its order.
KEY_COLUMNS = "key, size, content_type, modified_at, etag, expires_at"


# Enum members by value: a dict lookup is several times cheaper than calling the enum, and
# rows are decoded on every request.
_ACCESS = {a.value: a for a in GeneralAccess}


def _access(value: str) -> GeneralAccess:
    """`GeneralAccess(value)`, raising ValueError as it does for an unknown value."""
    try:
        return _ACCESS[value]
    except KeyError:
        raise ValueError(f"{value!r} is not a general access") from None


def user_from_row(row: Any) -> User:
    return User(row[0], row[1], row[2], _access(row[3]))


def user_values(user: User) -> tuple[Any, ...]:
    return (user.id, user.username, user.created_at, user.default_general_access.value)


def token_from_row(row: Any) -> Token:
    store_ids = tuple(json.loads(row[6])) if row[6] is not None else None
    return Token(row[0], row[1], row[2], row[3], row[4], bool(row[5]), store_ids)


def token_values(token: Token) -> tuple[Any, ...]:
    store_ids = json.dumps(list(token.store_ids)) if token.store_ids is not None else None
    return (token.id, token.user_id, token.token_hash, token.name, token.created_at, token.read_only, store_ids)


def grant_from_row(row: Any) -> Grant:
    return Grant(row[0], row[1], Permission[row[2]], row[3])


def grant_values(grant: Grant) -> tuple[Any, ...]:
    return (grant.store_id, grant.user_id, grant.permission.name, grant.created_at)


def store_from_row(row: Any) -> Store:
    """The five counters after `schema_json` become the store's `stats`."""
    schema = json.loads(row[8]) if row[8] is not None else None
    stats = StoreStats(row[9], row[10], row[11], row[12], row[13])
    expiry = expiry_from_json(row[16]) if row[16] is not None else NO_EXPIRY
    return Store(row[0], row[1], row[2], row[3], row[4], row[5], row[6], _access(row[7]), schema, stats,
                 row[14], row[15], expiry)  # fmt: skip


def store_values(store: Store) -> tuple[Any, ...]:
    s = store.stats
    return (
        store.id, store.name, store.user_id, store.created_at, store.modified_at, store.accessed_at,
        store.url_signing_secret, store.general_access.value,
        json.dumps(store.schema) if store.schema is not None else None,
        s.read_count, s.write_count, s.delete_count, s.list_count, s.storage_bytes, store.record_count,
        store.title, expiry_json(store.record_expiry),
    )  # fmt: skip


def _rules_json(rules: tuple[ExpiryRule, ...]) -> list[list[Any]]:
    return [[r.prefix, r.expire_after_secs] for r in rules]


def _rules(items: list[list[Any]]) -> tuple[ExpiryRule, ...]:
    return tuple(ExpiryRule(prefix, secs) for prefix, secs in items)


def expiry_json(expiry: RecordExpiry) -> str | None:
    """A store's expiry rules as the `record_expiry` column holds them; None when it has none."""
    if not expiry.rules and not expiry.retired:
        return None
    retired = [{"rules": _rules_json(r.rules), "at": r.retired_at} for r in expiry.retired]
    return json.dumps({"rules": _rules_json(expiry.rules), "retired": retired}, separators=(",", ":"))


def expiry_from_json(text: str) -> RecordExpiry:
    """The column's value back (rules are stored in the order `rule_for` reads them)."""
    data = json.loads(text)
    retired = tuple(RetiredRules(_rules(r["rules"]), r["at"]) for r in data.get("retired", ()))
    return RecordExpiry(_rules(data.get("rules", ())), retired)


def record_from_row(row: Any) -> RecordMeta:
    """A row of `RECORD_COLUMNS`. A driver may hand the body over as another bytes-like type
    (psycopg does for binary results): it becomes `bytes`."""
    key, content_type, encoding, size, etag, modified_at, inline, blob_id, expires_at = row
    if inline is not None and type(inline) is not bytes:
        inline = bytes(inline)
    return RecordMeta(key, content_type, encoding, size, etag, modified_at, inline, blob_id, expires_at)


def record_values(record: RecordMeta) -> tuple[Any, ...]:
    """The record's values in the order of `RECORD_COLUMNS`."""
    r = record
    return (r.key, r.content_type, r.encoding, r.size, r.etag, r.modified_at, r.inline, r.blob_id, r.expires_at)


def key_page(rows: list[Any], limit: int) -> KeyPage:
    """A page of keys from `KEY_COLUMNS` rows fetched with one row past `limit`, which only
    tells that more follow."""
    limit = max(limit, 0)
    return KeyPage(items=list(map(KeyItem._make, rows[:limit])), is_truncated=len(rows) > limit)
