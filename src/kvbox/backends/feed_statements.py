"""The change log's and webhooks' SQL that both indexes run, written once per dialect, and
their rows.

Tables (created by each backend's schema): `changes` (store_pk, seq, event_type, key,
etag, size, content_type, created_at), keyed by (store_pk, seq); `stores.change_seq`, the
store's latest sequence; `webhooks`, `deliveries` (pending ones only) and
`delivery_attempts` (the delivery log).
"""

from __future__ import annotations

from typing import Any

from kvbox.backends.statements import Dialect
from kvbox.core.feed import Change
from kvbox.core.webhooks import Attempt, Delivery, Webhook

CHANGE_COLUMNS = "seq, event_type, key, etag, size, content_type, created_at"
WEBHOOK_COLUMNS = (
    "id, store_id, request_url, event_types, key_prefix, is_enabled, secret, created_at, modified_at, cursor"
)
DELIVERY_COLUMNS = "id, webhook_id, sequence, event_type, body, created_at, next_attempt_at, attempts"
ATTEMPT_COLUMNS = (
    "delivery_id, webhook_id, sequence, event_type, attempt, status, response_status, duration_ms, error, created_at"
)


def change_from_row(row: Any) -> Change:
    return Change(row[0], row[1], row[2], row[3], row[4], row[5], row[6])


def webhook_from_row(row: Any) -> Webhook:
    events = tuple(e for e in row[3].split(",") if e)
    return Webhook(row[0], row[1], row[2], events, row[4], bool(row[5]), row[6], row[7], row[8], row[9])


def webhook_values(w: Webhook) -> tuple[Any, ...]:
    return (w.id, w.store_id, w.request_url, ",".join(w.event_types), w.key_prefix, w.is_enabled, w.secret,
            w.created_at, w.modified_at, w.cursor)  # fmt: skip


def delivery_from_row(row: Any) -> Delivery:
    return Delivery(row[0], row[1], row[2], row[3], bytes(row[4]), row[5], row[6], row[7])


def delivery_values(d: Delivery) -> tuple[Any, ...]:
    return (d.id, d.webhook_id, d.sequence, d.event_type, d.body, d.created_at, d.next_attempt_at, d.attempts)


def attempt_from_row(row: Any) -> Attempt:
    return Attempt(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7], row[8], row[9])


def attempt_values(a: Attempt) -> tuple[Any, ...]:
    return (a.delivery_id, a.webhook_id, a.sequence, a.event_type, a.attempt, a.status, a.response_status,
            a.duration_ms, a.error, a.created_at)  # fmt: skip


def trim_point(window: list[Any], before_ms: int) -> int | None:
    """The last sequence of the oldest changes (`window`: (seq, created_at) in order) that were
    all made before `before_ms`: the log is trimmed from its start up to there, never leaving
    a gap (a change committed later may carry an earlier time). None: nothing to trim."""
    last = None
    for seq, created_at in window:
        if created_at >= before_ms:
            break
        last = seq
    return last


class FeedStatements:
    """Every shared statement of the change log and the webhooks, in one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        d = dialect
        p = d.param
        self.insert_change = f"INSERT INTO changes (store_pk, {CHANGE_COLUMNS}) VALUES ({d.params(8)})"
        self.latest = f"SELECT pk, change_seq FROM stores WHERE id = {p}"
        self.page = f"SELECT {CHANGE_COLUMNS} FROM changes WHERE store_pk = {p} AND seq > {p} ORDER BY seq LIMIT {p}"
        self.oldest = f"SELECT min(seq) FROM changes WHERE store_pk = {p}"
        # Retention: walk the stores that have changes, and each one's oldest changes.
        self.next_log = f"SELECT store_pk FROM changes WHERE store_pk > {p} ORDER BY store_pk LIMIT 1"
        self.oldest_changes = f"SELECT seq, created_at FROM changes WHERE store_pk = {p} ORDER BY seq LIMIT {p}"
        self.trim = f"DELETE FROM changes WHERE store_pk = {p} AND seq <= {p}"

        # webhooks
        self.insert_webhook = (
            f"INSERT INTO webhooks ({WEBHOOK_COLUMNS}) SELECT {d.params(9)}, change_seq FROM stores WHERE id = {p} "
            f"RETURNING {WEBHOOK_COLUMNS}"
        )
        self.get_webhook = f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = {p} AND store_id = {p}"
        self.list_webhooks = f"SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE store_id = {p} ORDER BY created_at, id"
        self.update_webhook = (
            f"UPDATE webhooks SET request_url = {p}, event_types = {p}, key_prefix = {p}, is_enabled = {p}, "
            f"secret = {p}, modified_at = {p}, cursor = CASE WHEN {p} THEN "
            "(SELECT change_seq FROM stores WHERE stores.id = webhooks.store_id) ELSE cursor END "
            f"WHERE id = {p} AND store_id = {p} RETURNING {WEBHOOK_COLUMNS}"
        )
        self.delete_webhook = f"DELETE FROM webhooks WHERE id = {p} AND store_id = {p} RETURNING id"
        self.delete_deliveries = f"DELETE FROM deliveries WHERE webhook_id = {p}"
        self.delete_attempts = f"DELETE FROM delivery_attempts WHERE webhook_id = {p}"
        self.store_webhooks = f"SELECT id FROM webhooks WHERE store_id = {p}"
        self.webhooks_due = (
            f"SELECT {', '.join('w.' + c for c in WEBHOOK_COLUMNS.split(', '))} FROM webhooks AS w "
            f"JOIN stores AS s ON s.id = w.store_id WHERE w.is_enabled AND w.lease_until <= {p} "
            f"AND (s.change_seq > w.cursor OR EXISTS (SELECT 1 FROM deliveries AS d "
            f"WHERE d.webhook_id = w.id AND d.next_attempt_at <= {p})) ORDER BY w.id LIMIT {p}"
        )
        self.claim_webhook = (
            f"UPDATE webhooks SET lease_owner = {p}, lease_until = {p} WHERE id = {p} "
            f"AND (lease_until <= {p} OR lease_owner = {p}) RETURNING id"
        )
        self.release_webhook = (
            f"UPDATE webhooks SET lease_owner = NULL, lease_until = 0 WHERE id = {p} AND lease_owner = {p}"
        )
        self.insert_delivery = (
            f"INSERT INTO deliveries ({DELIVERY_COLUMNS}) VALUES ({d.params(8)}) ON CONFLICT (id) DO NOTHING"
        )
        self.move_cursor = f"UPDATE webhooks SET cursor = {d.greatest}(cursor, {p}) WHERE id = {p}"
        self.next_delivery = (
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE webhook_id = {p} ORDER BY sequence LIMIT 1"
        )
        self.insert_attempt = (
            f"INSERT INTO delivery_attempts ({ATTEMPT_COLUMNS}) SELECT {d.params(10)} "
            f"WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = {p})"
        )
        self.keep_attempts = (
            f"DELETE FROM delivery_attempts WHERE webhook_id = {p} AND n <= "
            f"(SELECT n FROM delivery_attempts WHERE webhook_id = {p} ORDER BY n DESC LIMIT 1 OFFSET {p})"
        )
        self.retry_delivery = f"UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = {p} WHERE id = {p}"
        self.end_delivery = f"DELETE FROM deliveries WHERE id = {p}"
        self.pending = (
            f"SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE webhook_id = {p} ORDER BY sequence DESC LIMIT {p}"
        )
        self.attempts = (
            f"SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts WHERE webhook_id = {p} ORDER BY n DESC LIMIT {p}"
        )
