"""Random identifiers and secrets (CSPRNG)."""

from __future__ import annotations

import secrets
import string

ID_ALPHABET = string.ascii_letters + string.digits
ID_LENGTH = 17


def new_id() -> str:
    """A 17-character alphanumeric resource ID, as on the platform. IDs double as read secrets."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(ID_LENGTH))


def looks_like_id(value: str) -> bool:
    return len(value) == ID_LENGTH and all(c in ID_ALPHABET for c in value)


def new_secret() -> str:
    """A URL-signing secret for a store."""
    return secrets.token_hex(16)


def new_token() -> str:
    """A new API token (shown once; only its hash is stored)."""
    return "kvb_" + secrets.token_urlsafe(30)


def new_blob_name() -> str:
    return secrets.token_hex(16)
