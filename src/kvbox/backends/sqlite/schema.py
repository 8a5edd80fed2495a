"""The SQLite index schema and its migrations, tracked in `PRAGMA user_version`.

`migrate` runs every time a database is opened. It brings the file up to
`SCHEMA_VERSION` inside one `BEGIN IMMEDIATE` transaction, so when several processes
open a new database at once exactly one of them creates the tables and the others find
them done.
"""

from __future__ import annotations

import sqlite3

from kvbox.core.errors import StorageError

# Stores get an internal integer key (`pk`) that record rows point to. AUTOINCREMENT
# guarantees a pk is never handed out twice, so a deleted store's rows (kept until
# `purge_deleted` reclaims them) can never reappear under a newly created store.
_V1: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        created_at INTEGER NOT NULL,
        default_general_access TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        user_id TEXT NOT NULL,
        token_hash TEXT NOT NULL,
        name TEXT NOT NULL,
        created_at INTEGER NOT NULL
    )
    """,
    "CREATE INDEX tokens_by_hash ON tokens (token_hash)",
    "CREATE INDEX tokens_by_user ON tokens (user_id)",
    """
    CREATE TABLE stores (
        pk INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        name TEXT,
        user_id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        modified_at INTEGER NOT NULL,
        accessed_at INTEGER NOT NULL,
        url_signing_secret TEXT NOT NULL,
        general_access TEXT NOT NULL,
        schema_json TEXT,
        read_count INTEGER NOT NULL DEFAULT 0,
        write_count INTEGER NOT NULL DEFAULT 0,
        delete_count INTEGER NOT NULL DEFAULT 0,
        list_count INTEGER NOT NULL DEFAULT 0,
        storage_bytes INTEGER NOT NULL DEFAULT 0,
        record_count INTEGER NOT NULL DEFAULT 0
    )
    """,
    # Unnamed stores are many and never clash; only names are unique per owner.
    "CREATE UNIQUE INDEX stores_name ON stores (user_id, name) WHERE name IS NOT NULL",
    # Store listing walks this index in (created_at, id) order for one owner.
    "CREATE INDEX stores_by_owner ON stores (user_id, created_at, id, name)",
    """
    CREATE TABLE records (
        store_pk INTEGER NOT NULL,
        key TEXT NOT NULL,
        content_type TEXT NOT NULL,
        encoding TEXT NOT NULL,
        size INTEGER NOT NULL,
        etag TEXT NOT NULL,
        modified_at INTEGER NOT NULL,
        inline_body BLOB,
        blob_id TEXT
    )
    """,
    "CREATE UNIQUE INDEX records_key ON records (store_pk, key)",
    # Key listing reads only this index, never the table with its inline bodies.
    "CREATE INDEX records_listing ON records (store_pk, key, size)",
    # Both serve housekeeping only and hold just the rows whose body is a blob.
    "CREATE INDEX records_blob ON records (blob_id) WHERE blob_id IS NOT NULL",
    "CREATE INDEX records_store_blobs ON records (store_pk) WHERE blob_id IS NOT NULL",
    """
    CREATE TABLE deleted_stores (
        store_pk INTEGER PRIMARY KEY,
        store_id TEXT NOT NULL
    )
    """,
)

# Sharing, scoped tokens and retention.
_V2: tuple[str, ...] = (
    """
    CREATE TABLE grants (
        store_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        permission TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (store_id, user_id)
    )
    """,
    "CREATE INDEX grants_by_user ON grants (user_id, store_id)",
    "ALTER TABLE tokens ADD COLUMN read_only INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE tokens ADD COLUMN store_ids TEXT",
    # The retention sweeper walks unnamed stores from the least recently accessed.
    "CREATE INDEX stores_unnamed_by_access ON stores (accessed_at) WHERE name IS NULL",
    "ALTER TABLE stores ADD COLUMN title TEXT",
)

# Index i holds the statements that take a database from version i to version i + 1.
# A counter every metadata change (users, tokens, stores, grants) bumps in its own
# transaction; record writes leave it alone. Readers keep metadata rows until it moves.
_V3: tuple[str, ...] = (
    "CREATE TABLE metadata_generation (id INTEGER PRIMARY KEY CHECK (id = 0), value INTEGER NOT NULL)",
    "INSERT INTO metadata_generation VALUES (0, 0)",
)

# Record lifecycle. Records gain their own expiry and `seq`, the store's write count after
# the record's write, which orders writes within a store: a delete by prefix hides the rows
# written up to its own `seq` (`deleted_prefixes`, reclaimed by purge_deleted) and spares
# later ones. Stores gain their expiry rules. Listing reads the record's fields from the
# wider covering index; the sweeper finds expired records through `records_expiry`.
_V4: tuple[str, ...] = (
    "ALTER TABLE records ADD COLUMN expires_at INTEGER",
    "ALTER TABLE records ADD COLUMN seq INTEGER NOT NULL DEFAULT 0",
    "DROP INDEX records_listing",
    "CREATE INDEX records_listing ON records (store_pk, key, size, content_type, modified_at, etag, expires_at, seq)",
    "CREATE INDEX records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL",
    "ALTER TABLE stores ADD COLUMN record_expiry TEXT",
    "CREATE INDEX stores_with_expiry ON stores (id) WHERE record_expiry IS NOT NULL",
    """
    CREATE TABLE deleted_prefixes (
        store_pk INTEGER NOT NULL,
        prefix TEXT NOT NULL,
        prefix_end TEXT NOT NULL,
        seq INTEGER NOT NULL,
        PRIMARY KEY (store_pk, prefix)
    )
    """,
    # Blobs of reclaimed rows, kept from the rows' deletion until the blobs are deleted too: a
    # crash in between leaves their ids here for the next pass, never an orphan.
    "CREATE TABLE freed_blobs (blob_id TEXT PRIMARY KEY)",
)

# Change feed and webhooks. `stores.change_seq` is the store's latest change sequence; the
# log `changes` is keyed by (store, sequence) and trimmed by age from each store's oldest.
# `deliveries` holds the pending deliveries of each webhook, `delivery_attempts` its log.
_V5: tuple[str, ...] = (
    "ALTER TABLE stores ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0",
    """
    CREATE TABLE changes (
        store_pk INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        key TEXT NOT NULL,
        etag TEXT,
        size INTEGER,
        content_type TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (store_pk, seq)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        store_id TEXT NOT NULL,
        request_url TEXT NOT NULL,
        event_types TEXT NOT NULL,
        key_prefix TEXT NOT NULL,
        is_enabled INTEGER NOT NULL,
        secret TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        modified_at INTEGER NOT NULL,
        cursor INTEGER NOT NULL,
        lease_owner TEXT,
        lease_until INTEGER NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX webhooks_by_store ON webhooks (store_id, created_at)",
    """
    CREATE TABLE deliveries (
        id TEXT PRIMARY KEY,
        webhook_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, sequence)",
    """
    CREATE TABLE delivery_attempts (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        delivery_id TEXT NOT NULL,
        webhook_id TEXT NOT NULL,
        sequence INTEGER NOT NULL,
        event_type TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        response_status INTEGER,
        duration_ms INTEGER,
        error TEXT,
        created_at INTEGER NOT NULL
    )
    """,
    "CREATE INDEX attempts_by_webhook ON delivery_attempts (webhook_id, n)",
)

# Store listings by name and name searches (the console's) walk an index on the owner and
# the folded name instead of reading every store of the owner.
# The folded name is spelled here once: queries must use the index's very expression.
FOLDED_NAME = "coalesce(lower(name), char(1114111))"
_V6: tuple[str, ...] = (f"CREATE INDEX stores_by_owner_name ON stores (user_id, {FOLDED_NAME}, created_at)",)

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6)
SCHEMA_VERSION = len(MIGRATIONS)


def user_version(conn: sqlite3.Connection) -> int:
    """The schema version recorded in the database file (0 for a new file)."""
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the database up to `SCHEMA_VERSION` and return the version found before.

    Needs a connection in autocommit mode (`isolation_level=None`). Running it on an
    up-to-date database changes nothing. A database written by a newer kvbox raises
    `StorageError` rather than being touched.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = user_version(conn)
        if found > SCHEMA_VERSION:
            raise StorageError(
                f"The database has schema version {found}; this kvbox understands up to {SCHEMA_VERSION}."
            )
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
            # PRAGMA takes no parameters; the value is our own integer.
            conn.execute(f"PRAGMA user_version = {version + 1}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return found
