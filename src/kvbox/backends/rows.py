"""Column lists and row-to-model conversions shared by the SQL backends (SQLite, PostgreSQL).

Both keep users, tokens, grants, stores and records in tables of the same shape, so a row
reads the same way from either. Rows are decoded by position, in the order of these lists.
"""

from __future__ import annotations

import json
from typing import Any

from kvbox.core.models import GeneralAccess, Grant, Permission, RecordMeta, Store, StoreStats, Token, User

USER_COLUMNS = "id, username, created_at, default_general_access"
TOKEN_COLUMNS = "id, user_id, token_hash, name, created_at, read_only, store_ids"
GRANT_COLUMNS = "store_id, user_id, permission, created_at"
STORE_COLUMNS = (
    "id, name, user_id, created_at, modified_at, accessed_at, url_signing_secret, general_access, "
    "schema_json, read_count, write_count, delete_count, list_count, storage_bytes, record_count, title"
)
# PostgreSQL's kvbox_put_record returns the replaced row in this order too, `key` aside.
RECORD_COLUMNS = "key, content_type, encoding, size, etag, modified_at, inline_body, blob_id"


def user_from_row(row: Any) -> User:
    return User(id=row[0], username=row[1], created_at=row[2], default_general_access=GeneralAccess(row[3]))


def token_from_row(row: Any) -> Token:
    return Token(
        id=row[0],
        user_id=row[1],
        token_hash=row[2],
        name=row[3],
        created_at=row[4],
        read_only=bool(row[5]),
        store_ids=tuple(json.loads(row[6])) if row[6] is not None else None,
    )


def grant_from_row(row: Any) -> Grant:
    return Grant(store_id=row[0], user_id=row[1], permission=Permission[row[2]], created_at=row[3])


def store_from_row(row: Any) -> Store:
    return Store(
        id=row[0],
        name=row[1],
        user_id=row[2],
        created_at=row[3],
        modified_at=row[4],
        accessed_at=row[5],
        url_signing_secret=row[6],
        general_access=GeneralAccess(row[7]),
        schema=json.loads(row[8]) if row[8] is not None else None,
        stats=StoreStats(*row[9:14]),
        record_count=row[14],
        title=row[15],
    )


def record_from_row(row: Any) -> RecordMeta:
    """A row of `RECORD_COLUMNS`. A driver may hand the body over as another bytes-like type
    (psycopg does for binary results): it becomes `bytes`."""
    key, content_type, encoding, size, etag, modified_at, inline, blob_id = row
    if inline is not None and type(inline) is not bytes:
        inline = bytes(inline)
    return RecordMeta(key, content_type, encoding, size, etag, modified_at, inline, blob_id)


def record_values(record: RecordMeta) -> tuple[Any, ...]:
    """The record's values in the order of `RECORD_COLUMNS`."""
    r = record
    return (r.key, r.content_type, r.encoding, r.size, r.etag, r.modified_at, r.inline, r.blob_id)
