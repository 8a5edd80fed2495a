"""A key page's body is written from pieces for speed: it must be exactly what `json_bytes` writes
for the page as a plain dict (the readable statement of its shape, below)."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kvbox.api.envelopes import keys_body
from kvbox.api.http import json_bytes
from kvbox.core.clock import iso_ms
from kvbox.core.expiry import expires_at, sorted_rules
from kvbox.core.models import ExpiryRule, KeyItem, KeyPage, Permission, RecordExpiry, Store
from kvbox.core.signatures import sign_record
from kvbox.core.urls import record_url

T0 = 1_767_225_600_000


def reference(page: KeyPage, store: Store, *, signed: bool, base_url: str, limit: int, start: str | None) -> bytes:
    items = []
    for i in page.items:
        expires = expires_at(store.record_expiry, i.key, i.modified_at, i.expires_at)
        signature = sign_record(store.url_signing_secret, i.key) if signed else None
        items.append({
            "key": i.key,
            "size": i.size,
            "recordPublicUrl": record_url(base_url, store.id, i.key, signature=signature),
            "contentType": i.content_type,
            "modifiedAt": iso_ms(i.modified_at),
            "etag": f'"{i.etag}"',
            "expiresAt": None if expires is None else iso_ms(expires),
        })  # fmt: skip
    data: dict[str, Any] = {
        "items": items,
        "count": len(items),
        "limit": limit,
        "exclusiveStartKey": start,
        "isTruncated": page.is_truncated,
        "nextExclusiveStartKey": page.next_key,
    }
    return json_bytes({"data": data})


items_st = st.lists(
    st.builds(
        KeyItem,
        key=st.from_regex(r"[a-zA-Z0-9!\-_.'()]{1,20}", fullmatch=True),
        size=st.integers(0, 10**12),
        content_type=st.one_of(st.sampled_from(["application/json; charset=utf-8", "text/plain"]), st.text()),
        modified_at=st.integers(0, 4 * 10**12),
        etag=st.one_of(st.from_regex(r"[0-9a-f]{24}", fullmatch=True), st.text()),
        expires_at=st.one_of(st.none(), st.integers(0, 4 * 10**12)),
    ),
    max_size=8,
    unique_by=lambda i: i.key,
).map(lambda items: sorted(items, key=lambda i: i.key))


@given(
    items=items_st,
    truncated=st.booleans(),
    signed=st.booleans(),
    ruled=st.booleans(),
    base_url=st.sampled_from(["http://kvbox.test", 'https://odd.example/"quoted"\\path']),
    start=st.one_of(st.none(), st.text(max_size=5)),
)
def test_the_body_is_the_page_as_json(
    items: list[KeyItem], truncated: bool, signed: bool, ruled: bool, base_url: str, start: str | None
) -> None:
    rules = sorted_rules([ExpiryRule("", 60), ExpiryRule("a", 5)]) if ruled else ()
    store = Store("S" * 17, "s", "u", T0, T0, T0, "secret", record_expiry=RecordExpiry(rules))
    page = KeyPage(items, truncated and bool(items))
    permission = Permission.WRITE if signed else Permission.READ
    body = keys_body(page, store=store, permission=permission, base_url=base_url, limit=7, exclusive_start_key=start)
    assert body == reference(page, store, signed=signed, base_url=base_url, limit=7, start=start)
