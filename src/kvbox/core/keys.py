"""Record key rules (the platform's: 1-256 characters of `a-zA-Z0-9!-_.'()`)."""

from __future__ import annotations

import re

from kvbox.core.errors import InvalidRecordKeyError

MAX_KEY_LENGTH = 256
KEY_RE = re.compile(r"[a-zA-Z0-9!\-_.'()]{1,256}")


def is_valid_key(key: str) -> bool:
    return KEY_RE.fullmatch(key) is not None


def validate_key(key: str) -> str:
    """Return `key` unchanged, or raise `InvalidRecordKeyError` saying what is wrong."""
    if not key:
        raise InvalidRecordKeyError("Record key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidRecordKeyError(f"Record key is too long ({len(key)} characters, the maximum is {MAX_KEY_LENGTH})")
    if KEY_RE.fullmatch(key) is None:
        raise InvalidRecordKeyError("Record key contains invalid character: only a-z, A-Z, 0-9 and !-_.'() are allowed")
    return key
