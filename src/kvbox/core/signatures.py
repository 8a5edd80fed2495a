"""Signed URLs: the platform's HMAC-base62 record signatures and expiring storage signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import string

BASE62 = string.digits + string.ascii_letters
STORAGE_SIGNATURE_VERSION = "0"


def base62(num: int) -> str:
    if num == 0:
        return "0"
    out = []
    while num:
        num, rem = divmod(num, 62)
        out.append(BASE62[rem])
    return "".join(reversed(out))


def hmac_base62(secret: str, message: str) -> str:
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()[:30]
    return base62(int(digest, 16))


def sign_record(secret: str, key: str) -> str:
    """The permanent signature for one record: the HMAC covers the key only."""
    return hmac_base62(secret, key)


def verify_record(secret: str, key: str, signature: str) -> bool:
    return hmac.compare_digest(sign_record(secret, key).encode(), signature.encode())


def sign_storage(secret: str, store_id: str, *, expires_at_ms: int = 0) -> str:
    """A signature for a whole store's content (key listing, ZIP). `expires_at_ms=0` never expires.

    Emitted without base64 padding; `verify_storage` accepts both forms.
    """
    mac = hmac_base62(secret, f"{STORAGE_SIGNATURE_VERSION}.{expires_at_ms}.{store_id}")
    raw = f"{STORAGE_SIGNATURE_VERSION}.{expires_at_ms}.{mac}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def verify_storage(secret: str, store_id: str, signature: str, *, now_ms: int) -> bool:
    """True when `signature` is a valid, unexpired storage signature for `store_id`."""
    stripped = signature.strip().rstrip("=")
    if not stripped or len(stripped) > 200:
        return False
    try:
        decoded = base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return False
    parts = decoded.split(".")
    if len(parts) != 3:
        return False
    version, expires, mac = parts
    if version != STORAGE_SIGNATURE_VERSION or not expires.isdigit():
        return False
    expires_at = int(expires)
    if expires_at != 0 and expires_at <= now_ms:
        return False
    expected = hmac_base62(secret, f"{version}.{expires}.{store_id}")
    return hmac.compare_digest(expected.encode(), mac.encode())
