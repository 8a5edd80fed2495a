"""API representations of stores, key pages and store pages (the `data` of each response)."""

from __future__ import annotations

from typing import Any

from kvbox.core.clock import iso_ms
from kvbox.core.expiry import expires_at as record_expires_at
from kvbox.core.expiry import rules_view
from kvbox.core.models import KeyPage, Permission, Store, User
from kvbox.core.signatures import RecordSigner, sign_record, sign_storage
from kvbox.core.urls import key_segment, records_path, store_path
from kvbox.core.urls import record_url as _record_url

KEYS_URL_TTL_MS = 14 * 86_400_000


def store_view(
    store: Store,
    *,
    owner: User | None,
    permission: Permission,
    base_url: str,
    now_ms: int,
    expires_at: int | None = None,
) -> dict[str, Any]:
    """The platform's KeyValueStore object. Signed URLs and the signing secret go to writers only."""
    writer = permission >= Permission.WRITE
    store_url = base_url + store_path(store.id)
    keys_url = f"{store_url}/keys"
    records_url = base_url + records_path(store.id)
    if writer:
        keys_url += "?signature=" + sign_storage(
            store.url_signing_secret, store.id, expires_at_ms=now_ms + KEYS_URL_TTL_MS
        )
        records_url += "?signature=" + sign_storage(
            store.url_signing_secret, store.id, expires_at_ms=now_ms + KEYS_URL_TTL_MS
        )
    stats = store.stats
    return {
        "id": store.id,
        "name": store.name,
        "title": store.title,
        "userId": store.user_id,
        "username": owner.username if owner else None,
        "createdAt": iso_ms(store.created_at),
        "modifiedAt": iso_ms(store.modified_at),
        "accessedAt": iso_ms(store.accessed_at),
        "actId": None,
        "actRunId": None,
        "consoleUrl": f"{base_url}/stores/{store.id}",
        "keysPublicUrl": keys_url,
        "recordsPublicUrl": records_url,
        "schema": store.schema,
        "generalAccess": store.general_access.value,
        "urlSigningSecretKey": store.url_signing_secret if writer else None,
        "recordCount": store.record_count,
        "expiresAt": iso_ms(expires_at) if expires_at is not None else None,
        "recordExpiry": rules_view(store.record_expiry.rules),
        "stats": {
            "readCount": stats.read_count,
            "writeCount": stats.write_count,
            "deleteCount": stats.delete_count,
            "listCount": stats.list_count,
            "storageBytes": stats.storage_bytes,
            "s3StorageBytes": stats.storage_bytes,
        },
    }


def record_url(base_url: str, store: Store, key: str, *, signed: bool) -> str:
    signature = sign_record(store.url_signing_secret, key) if signed else None
    return _record_url(base_url, store.id, key, signature=signature)


def keys_view(
    page: KeyPage,
    *,
    store: Store,
    permission: Permission,
    base_url: str,
    limit: int,
    exclusive_start_key: str | None,
    by_signature: bool = False,
) -> dict[str, Any]:
    """A key page, with each record's content type, last write, ETag (as its header gives it)
    and expiry. Record URLs are signed for writers, and for callers who listed with a valid
    storage signature (it already lets them read every record)."""
    signed = permission >= Permission.WRITE or by_signature
    prefix = base_url + records_path(store.id) + "/"
    signer = RecordSigner(store.url_signing_secret) if signed else None
    expiry = store.record_expiry
    ruled = bool(expiry.rules)
    items = []
    for item in page.items:
        url = prefix + key_segment(item.key)
        if signer is not None:
            url += "?signature=" + signer.sign(item.key)
        expires = item.expires_at
        if expires is None and ruled:
            expires = record_expires_at(expiry, item.key, item.modified_at, None)
        items.append({
            "key": item.key,
            "size": item.size,
            "recordPublicUrl": url,
            "contentType": item.content_type,
            "modifiedAt": iso_ms(item.modified_at),
            "etag": f'"{item.etag}"',
            "expiresAt": iso_ms(expires) if expires is not None else None,
        })  # fmt: skip
    return {
        "items": items,
        "count": len(items),
        "limit": limit,
        "exclusiveStartKey": exclusive_start_key,
        "isTruncated": page.is_truncated,
        "nextExclusiveStartKey": page.next_key,
    }
