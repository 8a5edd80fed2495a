"""Column lists and row-to-model conversions shared by the SQL backends (SQLite, PostgreSQL).

Both keep users, tokens, grants and stores in tables of the same shape, so a row reads the
same way from either.
"""

from __future__ import annotations

import json
from typing import Any

from kvbox.core.models import GeneralAccess, Grant, Permission, Store, StoreStats, Token, User

USER_COLUMNS = "id, username, created_at, default_general_access"
TOKEN_COLUMNS = "id, user_id, token_hash, name, created_at, read_only, store_ids"
GRANT_COLUMNS = "store_id, user_id, permission, created_at"
STORE_COLUMNS = (
    "id, name, user_id, created_at, modified_at, accessed_at, url_signing_secret, general_access, "
    "schema_json, read_count, write_count, delete_count, list_count, storage_bytes, record_count, title"
)


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
