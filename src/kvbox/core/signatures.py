"""Signed URLs: the platform's HMAC-base62 record signatures and expiring storage signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import string

BASE62 = string.digits + string.ascii_letters
STORAGE_SIGNATURE_VERSION = "0"
_PAIRS = [a + b for a in BASE62 for b in BASE62]
_BLOCK = hashlib.sha256().block_size
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def base62(num: int) -> str:
    """`num` in base62 (digits, lowercase, uppercase), most significant digit first."""
    if num < 62:
        return BASE62[num]
    out = []
    while num >= 3844:  # two digits per step: a key listing signs up to 1000 keys
        num, rem = divmod(num, 3844)
        out.append(_PAIRS[rem])
    out.append(_PAIRS[num] if num >= 62 else BASE62[num])
    return "".join(reversed(out))


def hmac_base62(secret: str, message: str) -> str:
    """HMAC-SHA256, its first 30 hex digits (15 bytes) read as a number, written in base62."""
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base62(int.from_bytes(digest[:15], "big"))


class RecordSigner:
    """Signs many keys with one secret (a key listing signs up to 1000). HMAC-SHA256 is
    computed from its two SHA-256 states, padded with the key once and copied per key
    (RFC 2104): what `hmac` does, without its per-copy Python objects."""

    def __init__(self, secret: str) -> None:
        key = secret.encode()
        if len(key) > _BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_IPAD))
        self._outer = hashlib.sha256(key.translate(_OPAD))

    def sign(self, key: str) -> str:
        inner = self._inner.copy()
        inner.update(key.encode())
        outer = self._outer.copy()
        outer.update(inner.digest())
        return base62(int.from_bytes(outer.digest()[:15], "big"))


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
