"""API representations of stores, key pages and store pages (the `data` of each response)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from kvbox.core.clock import iso_ms
from kvbox.core.expiry import expires_at as record_expires_at
from kvbox.core.expiry import rules_view
from kvbox.core.models import KeyPage, Permission, Store, User
from kvbox.core.signatures import RecordSigner, sign_record, sign_storage
from kvbox.core.urls import key_segment, records_path, store_path
from kvbox.core.urls import record_url as _record_url
from kvbox.service.settings import Settings

KEYS_URL_TTL_MS = 14 * 86_400_000


def public_base(scope: Mapping[str, Any], settings: Settings) -> str:
    """The base of the URLs a response emits: `--public-url` when set, else the scheme and host a
    trusted proxy forwarded (see api/proxies.py), else `http://HOST:PORT`."""
    forwarded = None if settings.public_url else scope.get("kvbox.base_url")
    return forwarded or settings.base_url


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


def keys_body(
    page: KeyPage,
    *,
    store: Store,
    permission: Permission,
    base_url: str,
    limit: int,
    exclusive_start_key: str | None,
    by_signature: bool = False,
) -> bytes:
    """A key page's response body, `{"data": {"items": [...], "count", "limit",
    "exclusiveStartKey", "isTruncated", "nextExclusiveStartKey"}}`, byte for byte what
    `json_bytes` writes for it. Each item: `key`, `size`, `recordPublicUrl`, `contentType`,
    `modifiedAt`, `etag` (as the record's header gives it) and `expiresAt` (own expiry or
    the store's rule; null when it never expires).

    Record URLs are signed for writers, and for callers who listed with a valid storage
    signature (it already lets them read every record). The items are written from
    pieces rather than through dicts and `json.dumps`: a page holds up to a thousand, and
    this is most of a listing's time. Keys need no escaping (every stored key passed
    `validate_key`); the other strings are escaped once per distinct value.
    """
    signer = RecordSigner(store.url_signing_secret) if permission >= Permission.WRITE or by_signature else None
    sign = signer.sign if signer is not None else None
    prefix = _json_inner(base_url + records_path(store.id) + "/")
    expiry = store.record_expiry
    ruled = bool(expiry.rules)
    types: dict[str, str] = {}
    parts = []
    for key, size, content_type, modified_at, etag, expires in page.items:
        url = prefix + key_segment(key)
        if sign is not None:
            url += "?signature=" + sign(key)
        ctype = types.get(content_type)
        if ctype is None:
            ctype = types[content_type] = _json(content_type)
        if expires is None and ruled:
            expires = record_expires_at(expiry, key, modified_at, None)
        quoted = f'"\\"{etag}\\""' if etag.isalnum() else _json(f'"{etag}"')
        parts.append(
            f'{{"key":"{key}","size":{size},"recordPublicUrl":"{url}","contentType":{ctype},'
            f'"modifiedAt":"{iso_ms(modified_at)}","etag":{quoted},'
            f'"expiresAt":{"null" if expires is None else chr(34) + iso_ms(expires) + chr(34)}}}'
        )
    return (
        f'{{"data":{{"items":[{",".join(parts)}],"count":{len(parts)},"limit":{limit},'
        f'"exclusiveStartKey":{_json(exclusive_start_key)},"isTruncated":{_json(page.is_truncated)},'
        f'"nextExclusiveStartKey":{_json(page.next_key)}}}}}'
    ).encode()


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _json_inner(text: str) -> str:
    """A string's JSON escaping, without the quotes around it."""
    return _json(text)[1:-1]
