"""The PostgreSQL index schema and its migrations, tracked in the `kvbox_schema` table.

`kvbox migrate` runs `migrate`; servers only check the version (`check_version`) and
refuse to start on a schema older or newer than they understand, so an upgrade is an
explicit step and nodes of two versions never rewrite each other's tables. The whole
upgrade is one transaction under an advisory lock: when several nodes migrate at once,
exactly one does the work and the others find it done. Tables live in the connection's
current schema (`search_path`), so one database can hold several deployments.
"""

from __future__ import annotations

from psycopg import AsyncConnection, sql

from kvbox.core.errors import StorageError

# The parameters and results of the two record writers, the same in every version that
# defines them (CREATE OR REPLACE keeps a function's signature).
_RECORD_PARAMETERS = """
        p_store text, p_key text, p_content_type text, p_encoding text, p_size bigint, p_etag text,
        p_modified_at bigint, p_inline bytea, p_blob_id text, p_expires_at bigint,
        p_if_match text[], p_if_none_match text[], p_must_exist boolean, p_must_not_exist boolean,
        p_now bigint, p_stale_before bigint""".removeprefix("\n")
_PUT_RECORD_HEAD = f"""(
{_RECORD_PARAMETERS}
    ) RETURNS TABLE (
        refused boolean, replaced boolean, o_content_type text, o_encoding text, o_size bigint, o_etag text,
        o_modified_at bigint, o_inline bytea, o_blob_id text, o_expires_at bigint
    ) LANGUAGE plpgsql SET search_path FROM CURRENT AS $$"""
_PUT_RECORD_AS_HEAD = f"""(
        p_token_hash text, p_token text[], p_read_only boolean, p_store_ids text, p_grant text, p_name text,
        p_expiry text,
{_RECORD_PARAMETERS}
    ) RETURNS TABLE (
        stale boolean, refused boolean, replaced boolean, o_content_type text, o_encoding text, o_size bigint,
        o_etag text, o_modified_at bigint, o_inline bytea, o_blob_id text, o_expires_at bigint
    ) LANGUAGE plpgsql SET search_path FROM CURRENT AS $$"""

# The record row written by every version of kvbox_put_record since version 3.
_UPSERT_RECORD = """
        INSERT INTO records AS r (store_pk, key, content_type, encoding, size, etag, modified_at, inline_body, blob_id,
            expires_at, seq)
        VALUES (v_pk, p_key, p_content_type, p_encoding, p_size, p_etag, p_modified_at, p_inline, p_blob_id,
            p_expires_at, v_seq)
        ON CONFLICT (store_pk, key) DO UPDATE SET content_type = excluded.content_type,
            encoding = excluded.encoding, size = excluded.size, etag = excluded.etag,
            modified_at = excluded.modified_at, inline_body = excluded.inline_body, blob_id = excluded.blob_id,
            expires_at = excluded.expires_at, seq = excluded.seq;""".removeprefix("\n")

# The replaced row read and the write's condition checked on what a reader sees of it
# (versions 3 on).
_CHECK_CONDITION = """
        SELECT * INTO v_old FROM records AS r WHERE r.store_pk = v_pk AND r.key = p_key;
        IF (p_if_match IS NOT NULL OR p_if_none_match IS NOT NULL OR p_must_exist OR p_must_not_exist)
            AND NOT kvbox_condition_holds(
                kvbox_seen_etag(v_pk, p_key, v_old.etag, v_old.expires_at, v_old.modified_at, v_old.seq, p_now,
                    p_stale_before),
                p_if_match, p_if_none_match, p_must_exist, p_must_not_exist) THEN""".removeprefix("\n")

# Keys and ids compare as bytes (COLLATE "C"), as in SQLite: key listings are in UTF-8
# byte order whatever the database's default collation. Stores get an internal identity
# key (`pk`) that record rows point to; identities are never handed out twice, so a
# deleted store's rows (kept until `purge_deleted`) never reappear under a new store.
_V1: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id text COLLATE "C" PRIMARY KEY,
        username text COLLATE "C" NOT NULL CONSTRAINT users_username UNIQUE,
        created_at bigint NOT NULL,
        default_general_access text NOT NULL
    )
    """,
    """
    CREATE TABLE tokens (
        seq bigint GENERATED ALWAYS AS IDENTITY,
        id text COLLATE "C" PRIMARY KEY,
        user_id text COLLATE "C" NOT NULL,
        token_hash text COLLATE "C" NOT NULL,
        name text NOT NULL,
        created_at bigint NOT NULL,
        read_only boolean NOT NULL DEFAULT false,
        store_ids text
    )
    """,
    "CREATE INDEX tokens_by_hash ON tokens (token_hash, seq)",
    "CREATE INDEX tokens_by_user ON tokens (user_id, seq)",
    """
    CREATE TABLE stores (
        pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id text COLLATE "C" NOT NULL UNIQUE,
        name text COLLATE "C",
        user_id text COLLATE "C" NOT NULL,
        created_at bigint NOT NULL,
        modified_at bigint NOT NULL,
        accessed_at bigint NOT NULL,
        url_signing_secret text NOT NULL,
        general_access text NOT NULL,
        schema_json text,
        read_count bigint NOT NULL DEFAULT 0,
        write_count bigint NOT NULL DEFAULT 0,
        delete_count bigint NOT NULL DEFAULT 0,
        list_count bigint NOT NULL DEFAULT 0,
        storage_bytes bigint NOT NULL DEFAULT 0,
        record_count bigint NOT NULL DEFAULT 0,
        title text
    )
    """,
    # Unnamed stores are many and never clash; only names are unique per owner.
    "CREATE UNIQUE INDEX stores_name ON stores (user_id, name) WHERE name IS NOT NULL",
    "CREATE INDEX stores_by_owner ON stores (user_id, created_at, pk)",
    # The retention sweeper walks unnamed stores from the least recently accessed.
    "CREATE INDEX stores_unnamed_by_access ON stores (accessed_at, id) WHERE name IS NULL",
    """
    CREATE TABLE records (
        store_pk bigint NOT NULL,
        key text COLLATE "C" NOT NULL,
        content_type text NOT NULL,
        encoding text NOT NULL,
        size bigint NOT NULL,
        etag text NOT NULL,
        modified_at bigint NOT NULL,
        inline_body bytea,
        blob_id text COLLATE "C",
        -- Key listing is an index-only range scan of the primary key, which carries the size.
        CONSTRAINT records_key PRIMARY KEY (store_pk, key) INCLUDE (size)
    )
    """,
    # Both serve housekeeping only and hold just the rows whose body is a blob.
    "CREATE INDEX records_blob ON records (blob_id) WHERE blob_id IS NOT NULL",
    "CREATE INDEX records_store_blobs ON records (store_pk) WHERE blob_id IS NOT NULL",
    """
    CREATE TABLE deleted_stores (
        store_pk bigint PRIMARY KEY,
        store_id text NOT NULL
    )
    """,
    # A grant goes with its store; the foreign key also stops a grant racing a delete.
    """
    CREATE TABLE grants (
        store_id text COLLATE "C" NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
        user_id text COLLATE "C" NOT NULL,
        permission text NOT NULL,
        created_at bigint NOT NULL,
        PRIMARY KEY (store_id, user_id)
    )
    """,
    "CREATE INDEX grants_by_user ON grants (user_id, store_id)",
    # One round trip per record write. The store row is locked first, which serializes the
    # store's writers across nodes; each later statement of the function then takes a fresh
    # snapshot (READ COMMITTED), so it sees the writes of the previous lock holder.
    # No rows back: the store does not exist.
    """
    CREATE FUNCTION kvbox_put_record(
        p_store text, p_key text, p_content_type text, p_encoding text, p_size bigint, p_etag text,
        p_modified_at bigint, p_inline bytea, p_blob_id text
    ) RETURNS TABLE (
        replaced boolean, o_content_type text, o_encoding text, o_size bigint, o_etag text,
        o_modified_at bigint, o_inline bytea, o_blob_id text
    ) LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        v_pk bigint;
        v_old records%ROWTYPE;
    BEGIN
        SELECT pk INTO v_pk FROM stores WHERE id = p_store FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        SELECT * INTO v_old FROM records AS r WHERE r.store_pk = v_pk AND r.key = p_key;
        INSERT INTO records AS r (store_pk, key, content_type, encoding, size, etag, modified_at, inline_body, blob_id)
        VALUES (v_pk, p_key, p_content_type, p_encoding, p_size, p_etag, p_modified_at, p_inline, p_blob_id)
        ON CONFLICT (store_pk, key) DO UPDATE SET content_type = excluded.content_type,
            encoding = excluded.encoding, size = excluded.size, etag = excluded.etag,
            modified_at = excluded.modified_at, inline_body = excluded.inline_body, blob_id = excluded.blob_id;
        UPDATE stores SET write_count = write_count + 1,
            storage_bytes = storage_bytes + p_size - coalesce(v_old.size, 0),
            record_count = record_count + (CASE WHEN v_old.key IS NULL THEN 1 ELSE 0 END),
            modified_at = greatest(modified_at, p_modified_at), accessed_at = greatest(accessed_at, p_modified_at)
        WHERE pk = v_pk;
        RETURN QUERY SELECT v_old.key IS NOT NULL, v_old.content_type, v_old.encoding, v_old.size, v_old.etag,
            v_old.modified_at, v_old.inline_body, v_old.blob_id;
    END
    $$
    """,
)

# Conditional writes (If-Match, If-None-Match). The condition is checked after the store
# row lock is taken, in the same transaction as the write: writers of a store queue on that
# lock, so the record each one checks is the one its write replaces. The 9-argument
# kvbox_put_record of version 1 stays, so nodes still running the previous release keep
# writing until they are upgraded.
_V2: tuple[str, ...] = (
    # Condition.holds (core/models.py) in SQL; p_etag NULL means there is no record.
    """
    CREATE FUNCTION kvbox_condition_holds(
        p_etag text, p_if_match text[], p_if_none_match text[], p_must_exist boolean, p_must_not_exist boolean
    ) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
        SELECT CASE WHEN p_etag IS NULL THEN NOT p_must_exist AND p_if_match IS NULL
            ELSE NOT p_must_not_exist
                AND (p_if_match IS NULL OR p_etag = ANY (p_if_match))
                AND (p_if_none_match IS NULL OR NOT (p_etag = ANY (p_if_none_match))) END
    $$
    """,
    # As version 1's, with the condition; `refused` says the condition did not hold (then
    # nothing was written and the other columns are NULL). No rows back: no such store.
    """
    CREATE FUNCTION kvbox_put_record(
        p_store text, p_key text, p_content_type text, p_encoding text, p_size bigint, p_etag text,
        p_modified_at bigint, p_inline bytea, p_blob_id text,
        p_if_match text[], p_if_none_match text[], p_must_exist boolean, p_must_not_exist boolean
    ) RETURNS TABLE (
        refused boolean, replaced boolean, o_content_type text, o_encoding text, o_size bigint, o_etag text,
        o_modified_at bigint, o_inline bytea, o_blob_id text
    ) LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        v_pk bigint;
        v_old records%ROWTYPE;
    BEGIN
        SELECT pk INTO v_pk FROM stores WHERE id = p_store FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
        SELECT * INTO v_old FROM records AS r WHERE r.store_pk = v_pk AND r.key = p_key;
        IF NOT kvbox_condition_holds(v_old.etag, p_if_match, p_if_none_match, p_must_exist, p_must_not_exist) THEN
            RETURN QUERY SELECT true, NULL::boolean, NULL::text, NULL::text, NULL::bigint, NULL::text,
                NULL::bigint, NULL::bytea, NULL::text;
            RETURN;
        END IF;
        INSERT INTO records AS r (store_pk, key, content_type, encoding, size, etag, modified_at, inline_body, blob_id)
        VALUES (v_pk, p_key, p_content_type, p_encoding, p_size, p_etag, p_modified_at, p_inline, p_blob_id)
        ON CONFLICT (store_pk, key) DO UPDATE SET content_type = excluded.content_type,
            encoding = excluded.encoding, size = excluded.size, etag = excluded.etag,
            modified_at = excluded.modified_at, inline_body = excluded.inline_body, blob_id = excluded.blob_id;
        UPDATE stores SET write_count = write_count + 1,
            storage_bytes = storage_bytes + p_size - coalesce(v_old.size, 0),
            record_count = record_count + (CASE WHEN v_old.key IS NULL THEN 1 ELSE 0 END),
            modified_at = greatest(modified_at, p_modified_at), accessed_at = greatest(accessed_at, p_modified_at)
        WHERE pk = v_pk;
        RETURN QUERY SELECT false, v_old.key IS NOT NULL, v_old.content_type, v_old.encoding, v_old.size, v_old.etag,
            v_old.modified_at, v_old.inline_body, v_old.blob_id;
    END
    $$
    """,
)

# Record lifecycle. Records gain their own expiry and `seq`, the store's write count after
# the record's write, which orders writes within a store: a delete by prefix hides the rows
# written up to its own `seq` (`deleted_prefixes`, reclaimed by purge_deleted) and spares
# later ones. Stores gain their expiry rules; the sweeper finds expired records through
# `records_expiry`. kvbox_put_record takes the expiry and sets `seq` from the write count;
# the earlier versions go, since a node writing rows without `seq` would let a delete by
# prefix hide its later writes (such a node refuses to start on this schema anyway).
_V3: tuple[str, ...] = (
    "ALTER TABLE records ADD COLUMN expires_at bigint, ADD COLUMN seq bigint NOT NULL DEFAULT 0",
    "CREATE INDEX records_expiry ON records (expires_at) WHERE expires_at IS NOT NULL",
    "ALTER TABLE stores ADD COLUMN record_expiry text",
    "CREATE INDEX stores_with_expiry ON stores (id) WHERE record_expiry IS NOT NULL",
    """
    CREATE TABLE deleted_prefixes (
        store_pk bigint NOT NULL,
        prefix text COLLATE "C" NOT NULL,
        prefix_end text COLLATE "C" NOT NULL,
        seq bigint NOT NULL,
        PRIMARY KEY (store_pk, prefix)
    )
    """,
    # Blobs of reclaimed rows, kept from the rows' deletion until the blobs are deleted too: a
    # crash in between leaves their ids here for the next pass, never an orphan.
    'CREATE TABLE freed_blobs (blob_id text COLLATE "C" PRIMARY KEY)',
    "DROP FUNCTION kvbox_put_record(text, text, text, text, bigint, text, bigint, bytea, text)",
    "DROP FUNCTION kvbox_put_record(text, text, text, text, bigint, text, bigint, bytea, text, text[], text[], "
    "boolean, boolean)",
    # The etag a reader sees of a row at p_now: NULL when the row has expired (its own expiry,
    # or last written at or before p_stale_before, from the store's rules for its key) or a
    # delete by prefix hid it. Without p_now, the row's etag.
    """
    CREATE FUNCTION kvbox_seen_etag(
        p_store_pk bigint, p_key text, p_etag text, p_expires_at bigint, p_modified_at bigint, p_seq bigint,
        p_now bigint, p_stale_before bigint
    ) RETURNS text LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
        SELECT CASE
            WHEN p_etag IS NULL OR p_now IS NULL THEN p_etag
            WHEN p_expires_at IS NOT NULL AND p_expires_at <= p_now THEN NULL
            WHEN p_expires_at IS NULL AND p_modified_at <= p_stale_before THEN NULL
            WHEN EXISTS (SELECT 1 FROM deleted_prefixes AS d WHERE d.store_pk = p_store_pk
                AND p_key >= d.prefix AND p_key < d.prefix_end AND p_seq <= d.seq) THEN NULL
            ELSE p_etag END
    $$
    """,
    # Writes a record if the condition holds for the record a reader sees (`refused`: it did
    # not; nothing was written and the other columns are NULL). No rows back: no such store.
    """
    CREATE FUNCTION kvbox_put_record"""
    + _PUT_RECORD_HEAD
    + """
    DECLARE
        v_pk bigint;
        v_old records%ROWTYPE;
        v_seq bigint;
    BEGIN
        SELECT pk INTO v_pk FROM stores WHERE id = p_store FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
"""
    + _CHECK_CONDITION
    + """
            RETURN QUERY SELECT true, NULL::boolean, NULL::text, NULL::text, NULL::bigint, NULL::text,
                NULL::bigint, NULL::bytea, NULL::text, NULL::bigint;
            RETURN;
        END IF;
        UPDATE stores SET write_count = write_count + 1,
            storage_bytes = storage_bytes + p_size - coalesce(v_old.size, 0),
            record_count = record_count + (CASE WHEN v_old.key IS NULL THEN 1 ELSE 0 END),
            modified_at = greatest(modified_at, p_modified_at), accessed_at = greatest(accessed_at, p_modified_at)
        WHERE pk = v_pk RETURNING write_count INTO v_seq;
"""
    + _UPSERT_RECORD
    + """
        RETURN QUERY SELECT false, v_old.key IS NOT NULL, v_old.content_type, v_old.encoding, v_old.size, v_old.etag,
            v_old.modified_at, v_old.inline_body, v_old.blob_id, v_old.expires_at;
    END
    $$
    """,
)

# Change feed and webhooks. `stores.change_seq` is the store's latest change sequence, moved
# under the store's row lock in the transaction of the change, so sequences commit in order.
# Record writes append to `changes` (trimmed by age from each store's oldest) and notify
# the channel `kvbox_channel()`, on which every node LISTENs to wake its long-polls. Pool
# connections of a deployment running with the feed off set `kvbox.changes` to off.
# kvbox_put_record keeps its signature; its feed lines are marked `-- change feed`.
_V4: tuple[str, ...] = (
    "ALTER TABLE stores ADD COLUMN change_seq bigint NOT NULL DEFAULT 0",
    """
    CREATE TABLE changes (
        store_pk bigint NOT NULL,
        seq bigint NOT NULL,
        event_type text NOT NULL,
        key text COLLATE "C" NOT NULL,
        etag text,
        size bigint,
        content_type text,
        created_at bigint NOT NULL,
        PRIMARY KEY (store_pk, seq)
    )
    """,
    """
    CREATE TABLE webhooks (
        id text COLLATE "C" PRIMARY KEY,
        store_id text COLLATE "C" NOT NULL REFERENCES stores (id) ON DELETE CASCADE,
        request_url text NOT NULL,
        event_types text NOT NULL,
        key_prefix text COLLATE "C" NOT NULL,
        is_enabled boolean NOT NULL,
        secret text NOT NULL,
        created_at bigint NOT NULL,
        modified_at bigint NOT NULL,
        cursor bigint NOT NULL,
        lease_owner text,
        lease_until bigint NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX webhooks_by_store ON webhooks (store_id, created_at)",
    """
    CREATE TABLE deliveries (
        id text COLLATE "C" PRIMARY KEY,
        webhook_id text COLLATE "C" NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        sequence bigint NOT NULL,
        event_type text NOT NULL,
        body bytea NOT NULL,
        created_at bigint NOT NULL,
        next_attempt_at bigint NOT NULL,
        attempts integer NOT NULL DEFAULT 0
    )
    """,
    "CREATE INDEX deliveries_by_webhook ON deliveries (webhook_id, sequence)",
    """
    CREATE TABLE delivery_attempts (
        n bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id text COLLATE "C" NOT NULL,
        webhook_id text COLLATE "C" NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
        sequence bigint NOT NULL,
        event_type text NOT NULL,
        attempt integer NOT NULL,
        status text NOT NULL,
        response_status integer,
        duration_ms bigint,
        error text,
        created_at bigint NOT NULL
    )
    """,
    "CREATE INDEX attempts_by_webhook ON delivery_attempts (webhook_id, n)",
    """
    CREATE FUNCTION kvbox_changes_on() RETURNS boolean LANGUAGE sql STABLE AS $$
        SELECT coalesce(current_setting('kvbox.changes', true), '') IS DISTINCT FROM 'off'
    $$
    """,
    """
    CREATE FUNCTION kvbox_channel() RETURNS text LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
        SELECT 'kvbox_changes:' || current_schema()
    $$
    """,
    # The events of a record write (core/feed.py's write_events): over a row readers no
    # longer saw, first that record's RECORD.DELETED (hidden by a delete by prefix) or
    # RECORD.EXPIRED, then RECORD.CREATED.
    """
    CREATE FUNCTION kvbox_write_events(
        p_store_pk bigint, p_key text, p_old_key text, p_expires_at bigint, p_modified_at bigint, p_seq bigint,
        p_now bigint, p_stale_before bigint
    ) RETURNS text[] LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
        SELECT CASE
            WHEN p_old_key IS NULL THEN ARRAY['RECORD.CREATED']
            WHEN EXISTS (SELECT 1 FROM deleted_prefixes AS d WHERE d.store_pk = p_store_pk
                AND p_key >= d.prefix AND p_key < d.prefix_end AND p_seq <= d.seq)
                THEN ARRAY['RECORD.DELETED', 'RECORD.CREATED']
            WHEN (p_expires_at IS NOT NULL AND p_expires_at <= p_now)
                OR (p_expires_at IS NULL AND p_modified_at <= p_stale_before)
                THEN ARRAY['RECORD.EXPIRED', 'RECORD.CREATED']
            ELSE ARRAY['RECORD.UPDATED'] END
    $$
    """,
    # Append the changes `p_events` of one key, numbered up to `p_last_seq` (the store's
    # change_seq already moved past them); the last carries the record's fields.
    """
    CREATE FUNCTION kvbox_log_changes(
        p_store_pk bigint, p_store text, p_last_seq bigint, p_events text[], p_key text, p_etag text, p_size bigint,
        p_content_type text, p_at bigint
    ) RETURNS void LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    DECLARE
        v_n integer := cardinality(p_events);
    BEGIN
        INSERT INTO changes (store_pk, seq, event_type, key, etag, size, content_type, created_at)
        SELECT p_store_pk, p_last_seq - v_n + i, p_events[i], p_key,
            CASE WHEN i = v_n AND p_events[i] <> 'RECORD.DELETED' THEN p_etag END,
            CASE WHEN i = v_n AND p_events[i] <> 'RECORD.DELETED' THEN p_size END,
            CASE WHEN i = v_n AND p_events[i] <> 'RECORD.DELETED' THEN p_content_type END, p_at
        FROM generate_series(1, v_n) AS i;
        PERFORM pg_notify(kvbox_channel(), p_store);
    END
    $$
    """,
    # Writes a record if the condition holds for the record a reader sees (`refused`: it did
    # not; nothing was written and the other columns are NULL). No rows back: no such store.
    """
    CREATE OR REPLACE FUNCTION kvbox_put_record"""
    + _PUT_RECORD_HEAD
    + """
    DECLARE
        v_pk bigint;
        v_old records%ROWTYPE;
        v_seq bigint;
        v_events text[];  -- change feed
        v_change_seq bigint;  -- change feed
    BEGIN
        SELECT pk INTO v_pk FROM stores WHERE id = p_store FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;
"""
    + _CHECK_CONDITION
    + """
            RETURN QUERY SELECT true, NULL::boolean, NULL::text, NULL::text, NULL::bigint, NULL::text,
                NULL::bigint, NULL::bytea, NULL::text, NULL::bigint;
            RETURN;
        END IF;
        IF kvbox_changes_on() THEN  -- change feed
            v_events := kvbox_write_events(v_pk, p_key, v_old.key, v_old.expires_at, v_old.modified_at, v_old.seq,
                coalesce(p_now, p_modified_at), p_stale_before);
        END IF;
        UPDATE stores SET write_count = write_count + 1,
            storage_bytes = storage_bytes + p_size - coalesce(v_old.size, 0),
            record_count = record_count + (CASE WHEN v_old.key IS NULL THEN 1 ELSE 0 END),
            modified_at = greatest(modified_at, p_modified_at), accessed_at = greatest(accessed_at, p_modified_at),
            change_seq = change_seq + coalesce(cardinality(v_events), 0)  -- change feed
        WHERE pk = v_pk RETURNING write_count, change_seq INTO v_seq, v_change_seq;
"""
    + _UPSERT_RECORD
    + """
        IF v_events IS NOT NULL THEN  -- change feed
            PERFORM kvbox_log_changes(v_pk, p_store, v_change_seq, v_events, p_key, p_etag, p_size, p_content_type,
                p_modified_at);
        END IF;
        RETURN QUERY SELECT false, v_old.key IS NOT NULL, v_old.content_type, v_old.encoding, v_old.size, v_old.etag,
            v_old.modified_at, v_old.inline_body, v_old.blob_id, v_old.expires_at;
    END
    $$
    """,
)

# The folded name is spelled here once: queries must use the index's very expression.
FOLDED_NAME = "coalesce(lower(name), chr(1114111))"

# Version 5. A record write in one round trip with the check of what the node decided it on (its
# `WriteBasis`, read earlier and possibly cached): kvbox_put_record_as locks the store row,
# checks the basis (kvbox_basis_holds) and, if it holds, writes through kvbox_put_record,
# which keeps all of the record-row logic. A token revoked, a grant changed or removed,
# a store renamed or its expiry rules replaced before the write commits make it refuse
# (`stale`), and the node decides again from fresh rows.
_V5: tuple[str, ...] = (
    # Store listings by name and name searches (the console's) walk this index instead of
    # reading every store of the owner.
    f"CREATE INDEX stores_by_owner_name ON stores (user_id, {FOLDED_NAME}, created_at, pk)",
    """
    CREATE FUNCTION kvbox_basis_holds(
        p_store text, p_token_hash text, p_token text[], p_read_only boolean, p_store_ids text, p_grant text,
        p_name text, p_expiry text
    ) RETURNS boolean LANGUAGE sql STABLE SET search_path FROM CURRENT AS $$
        SELECT EXISTS (SELECT 1 FROM stores AS s WHERE s.id = p_store
                AND (p_name IS NULL OR s.name = p_name) AND s.record_expiry IS NOT DISTINCT FROM p_expiry)
            AND (p_token_hash IS NULL OR EXISTS (
                SELECT 1 FROM (SELECT * FROM tokens WHERE token_hash = p_token_hash ORDER BY seq LIMIT 1) AS t
                WHERE ARRAY[t.id, t.user_id, t.name, t.created_at::text] = p_token
                    AND t.read_only = p_read_only AND t.store_ids IS NOT DISTINCT FROM p_store_ids
                    AND EXISTS (SELECT 1 FROM users AS u WHERE u.id = t.user_id)))
            AND (p_token IS NULL OR (SELECT g.permission FROM grants AS g
                WHERE g.store_id = p_store AND g.user_id = p_token[2]) IS NOT DISTINCT FROM p_grant)
    $$
    """,
    """
    CREATE FUNCTION kvbox_put_record_as"""
    + _PUT_RECORD_AS_HEAD
    + """
    BEGIN
        -- The lock kvbox_put_record takes first anyway: the basis is checked under it.
        PERFORM 1 FROM stores WHERE id = p_store FOR NO KEY UPDATE;
        IF NOT kvbox_basis_holds(p_store, p_token_hash, p_token, p_read_only, p_store_ids, p_grant, p_name,
                p_expiry) THEN
            RETURN QUERY SELECT true, NULL::boolean, NULL::boolean, NULL::text, NULL::text, NULL::bigint,
                NULL::text, NULL::bigint, NULL::bytea, NULL::text, NULL::bigint;
            RETURN;
        END IF;
        RETURN QUERY SELECT false, w.* FROM kvbox_put_record(p_store, p_key, p_content_type, p_encoding, p_size,
            p_etag, p_modified_at, p_inline, p_blob_id, p_expires_at, p_if_match, p_if_none_match, p_must_exist,
            p_must_not_exist, p_now, p_stale_before) AS w;
    END
    $$
    """,
)


# Version 6: the record write as one PL/pgSQL body, for speed. PL/pgSQL keeps the plans of
# its own statements for the session, but a SQL function that cannot be inlined (every one
# with `SET search_path`) is planned again on each call: kvbox_basis_holds, kvbox_write_events
# and kvbox_channel took most of a write's time in the database (about 0.5 of 1.1 ms). Their
# logic now sits inline in both writers, with the same results; the functions stay for the
# nodes of the previous release and for the other statements that call them.
def _record_write(refused: str, written: str, check: str) -> str:
    """The body shared by both writers, from the store row's lock on (`v_pk` set): `refused` and
    `written` lead the row returned when the condition fails or the record is written; `check`
    reads the replaced row into `v_old` and opens the IF that refuses the write."""
    return f"""
{check}
            RETURN QUERY SELECT {refused}, NULL::boolean, NULL::text, NULL::text, NULL::bigint, NULL::text,
                NULL::bigint, NULL::bytea, NULL::text, NULL::bigint;
            RETURN;
        END IF;
        IF kvbox_changes_on() THEN  -- kvbox_write_events
            v_events := CASE
                WHEN v_old.key IS NULL THEN ARRAY['RECORD.CREATED']
                WHEN EXISTS (SELECT 1 FROM deleted_prefixes AS d WHERE d.store_pk = v_pk
                    AND p_key >= d.prefix AND p_key < d.prefix_end AND v_old.seq <= d.seq)
                    THEN ARRAY['RECORD.DELETED', 'RECORD.CREATED']
                WHEN (v_old.expires_at IS NOT NULL AND v_old.expires_at <= coalesce(p_now, p_modified_at))
                    OR (v_old.expires_at IS NULL AND v_old.modified_at <= p_stale_before)
                    THEN ARRAY['RECORD.EXPIRED', 'RECORD.CREATED']
                ELSE ARRAY['RECORD.UPDATED'] END;
        END IF;
        UPDATE stores SET write_count = write_count + 1,
            storage_bytes = storage_bytes + p_size - coalesce(v_old.size, 0),
            record_count = record_count + (CASE WHEN v_old.key IS NULL THEN 1 ELSE 0 END),
            modified_at = greatest(modified_at, p_modified_at), accessed_at = greatest(accessed_at, p_modified_at),
            change_seq = change_seq + coalesce(cardinality(v_events), 0)
        WHERE pk = v_pk RETURNING write_count, change_seq INTO v_seq, v_change_seq;
{_UPSERT_RECORD}
        IF v_events IS NOT NULL THEN  -- kvbox_log_changes
            v_n := cardinality(v_events);
            INSERT INTO changes (store_pk, seq, event_type, key, etag, size, content_type, created_at)
            SELECT v_pk, v_change_seq - v_n + i, v_events[i], p_key,
                CASE WHEN i = v_n AND v_events[i] <> 'RECORD.DELETED' THEN p_etag END,
                CASE WHEN i = v_n AND v_events[i] <> 'RECORD.DELETED' THEN p_size END,
                CASE WHEN i = v_n AND v_events[i] <> 'RECORD.DELETED' THEN p_content_type END, p_modified_at
            FROM generate_series(1, v_n) AS i;
            PERFORM pg_notify('kvbox_changes:' || current_schema(), p_store);  -- kvbox_channel
        END IF;
        RETURN QUERY SELECT {written}, v_old.key IS NOT NULL, v_old.content_type, v_old.encoding, v_old.size,
            v_old.etag, v_old.modified_at, v_old.inline_body, v_old.blob_id, v_old.expires_at;"""


_WRITE_VARIABLES = """
        v_old records%ROWTYPE;
        v_seq bigint;
        v_events text[];
        v_change_seq bigint;
        v_n integer;"""


def _record_writers(check: str, variables: str) -> tuple[str, ...]:
    """Both record writers as of version 6, with `check` for the condition and `variables`
    declared after `v_pk`."""
    return (
        f"""
    CREATE OR REPLACE FUNCTION kvbox_put_record{_PUT_RECORD_HEAD}
    DECLARE
        v_pk bigint;{variables}
    BEGIN
        SELECT pk INTO v_pk FROM stores WHERE id = p_store FOR NO KEY UPDATE;
        IF NOT FOUND THEN
            RETURN;
        END IF;{_record_write("true", "false", check)}
    END
    $$
    """,
        # kvbox_basis_holds inline, on the store row the lock reads.
        f"""
    CREATE OR REPLACE FUNCTION kvbox_put_record_as{_PUT_RECORD_AS_HEAD}
    DECLARE
        v_pk bigint;
        v_name text;
        v_expiry text;{variables}
    BEGIN
        SELECT pk, name, record_expiry INTO v_pk, v_name, v_expiry FROM stores WHERE id = p_store FOR NO KEY UPDATE;
        IF NOT FOUND OR (p_name IS NOT NULL AND v_name IS DISTINCT FROM p_name)
            OR v_expiry IS DISTINCT FROM p_expiry
            OR (p_token_hash IS NOT NULL AND NOT EXISTS (
                SELECT 1 FROM (SELECT * FROM tokens WHERE token_hash = p_token_hash ORDER BY seq LIMIT 1) AS t
                WHERE ARRAY[t.id, t.user_id, t.name, t.created_at::text] = p_token
                    AND t.read_only = p_read_only AND t.store_ids IS NOT DISTINCT FROM p_store_ids
                    AND EXISTS (SELECT 1 FROM users AS u WHERE u.id = t.user_id)))
            OR (p_token IS NOT NULL AND (SELECT g.permission FROM grants AS g
                WHERE g.store_id = p_store AND g.user_id = p_token[2]) IS DISTINCT FROM p_grant) THEN
            RETURN QUERY SELECT true, NULL::boolean, NULL::boolean, NULL::text, NULL::text, NULL::bigint,
                NULL::text, NULL::bigint, NULL::bytea, NULL::text, NULL::bigint;
            RETURN;
        END IF;{_record_write("false, true", "false, false", check)}
    END
    $$
    """,
    )


_V6 = _record_writers(_CHECK_CONDITION, _WRITE_VARIABLES)


def seen_etag_sql(row: str, store_pk: str, key: str, now: str, stale_before: str) -> str:
    """kvbox_seen_etag written out, on the record row `row` (a name whose `etag`, `expires_at`,
    `modified_at` and `seq` are read) of store `store_pk` at `key`: a SQL function with
    `SET search_path` is planned again on every call, which made a conditional write cost
    0.87 of a plain one."""
    return f"""CASE
                WHEN {row}.etag IS NULL OR {now} IS NULL THEN {row}.etag
                WHEN {row}.expires_at IS NOT NULL AND {row}.expires_at <= {now} THEN NULL
                WHEN {row}.expires_at IS NULL AND {row}.modified_at <= {stale_before} THEN NULL
                WHEN EXISTS (SELECT 1 FROM deleted_prefixes AS dp WHERE dp.store_pk = {store_pk}
                    AND {key} >= dp.prefix AND {key} < dp.prefix_end AND {row}.seq <= dp.seq) THEN NULL
                ELSE {row}.etag END"""


# The etag a reader sees of the replaced row, read only when the write has a condition.
_SEEN_ETAG = seen_etag_sql("v_old", "v_pk", "p_key", "p_now", "p_stale_before")
_CHECK_CONDITION_INLINE = f"""
        SELECT * INTO v_old FROM records AS r WHERE r.store_pk = v_pk AND r.key = p_key;
        v_conditional := p_if_match IS NOT NULL OR p_if_none_match IS NOT NULL OR p_must_exist OR p_must_not_exist;
        IF v_conditional THEN
            v_seen := {_SEEN_ETAG};
        END IF;
        IF v_conditional AND NOT kvbox_condition_holds(v_seen, p_if_match, p_if_none_match, p_must_exist,
                p_must_not_exist) THEN""".removeprefix("\n")

# Version 7: both writers with the condition's etag computed inline.
_V7 = _record_writers(
    _CHECK_CONDITION_INLINE, _WRITE_VARIABLES + "\n        v_conditional boolean;\n        v_seen text;"
)

# Index i holds the statements that take a schema from version i to version i + 1.
MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2, _V3, _V4, _V5, _V6, _V7)
SCHEMA_VERSION = len(MIGRATIONS)

VERSION_TABLE = "kvbox_schema"
# Advisory lock keys are hashed from a name and the schema, so deployments in other
# schemas of the same database never wait for each other.
LOCK_KEY_SQL = "hashtextextended(%s || ':' || current_schema(), 0)"
# kvbox_channel()'s value, written out: a function with `SET search_path` is planned again on
# every call, this expression is not (a session's schema is the one kvbox lives in).
CHANNEL_SQL = "'kvbox_changes:' || current_schema()"


async def schema_version(conn: AsyncConnection) -> int:
    """The version recorded in the current schema (0 when kvbox has never migrated it)."""
    cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (VERSION_TABLE,))
    row = await cur.fetchone()
    if row is None or not row[0]:
        return 0
    cur = await conn.execute(sql.SQL("SELECT max(version) FROM {}").format(sql.Identifier(VERSION_TABLE)))
    found = await cur.fetchone()
    return int(found[0]) if found and found[0] is not None else 0


def _too_new(found: int) -> StorageError:
    return StorageError(f"The PostgreSQL schema has version {found}; this kvbox understands up to {SCHEMA_VERSION}.")


async def check_version(conn: AsyncConnection) -> None:
    """Raise `StorageError` unless the schema is exactly `SCHEMA_VERSION`."""
    found = await schema_version(conn)
    if found > SCHEMA_VERSION:
        raise _too_new(found)
    if found < SCHEMA_VERSION:
        raise StorageError(
            f"The PostgreSQL schema is at version {found}, this kvbox needs {SCHEMA_VERSION}: "
            "run `kvbox migrate` with the same --metadata-url first."
        )


async def migrate(conn: AsyncConnection, *, up_to: int = SCHEMA_VERSION) -> int:
    """Bring the current schema up to `SCHEMA_VERSION` and return the version found before.

    Needs an autocommit connection. Running it on an up-to-date schema changes nothing.
    A schema written by a newer kvbox raises `StorageError` rather than being touched.
    `up_to` stops at an older version (tests upgrade from there, as a deployment would).
    """
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({LOCK_KEY_SQL})", ("kvbox-migrate",))
        found = await schema_version(conn)
        if found > SCHEMA_VERSION:
            raise _too_new(found)
        if found == 0:
            await conn.execute(
                sql.SQL("CREATE TABLE {} (version integer NOT NULL)").format(sql.Identifier(VERSION_TABLE))
            )
        for version in range(found, up_to):
            for statement in MIGRATIONS[version]:
                await conn.execute(statement)
            await conn.execute(
                sql.SQL("INSERT INTO {} (version) VALUES (%s)").format(sql.Identifier(VERSION_TABLE)), (version + 1,)
            )
    return found
