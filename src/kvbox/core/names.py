"""Store and user name rules."""

from __future__ import annotations

import re

from kvbox.core.errors import InvalidStoreNameError, InvalidValueError

MAX_STORE_NAME_LENGTH = 63
STORE_NAME_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?")
USERNAME_RE = re.compile(r"[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?")


def is_valid_store_name(name: str) -> bool:
    return len(name) <= MAX_STORE_NAME_LENGTH and STORE_NAME_RE.fullmatch(name) is not None


def validate_store_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidStoreNameError("Invalid value provided: store name must be a non-empty string")
    if len(name) > MAX_STORE_NAME_LENGTH:
        raise InvalidStoreNameError(
            f"Invalid value provided: store name is too long ({len(name)} characters, "
            f"the maximum is {MAX_STORE_NAME_LENGTH})"
        )
    if STORE_NAME_RE.fullmatch(name) is None:
        raise InvalidStoreNameError(
            "Invalid value provided: store name may contain only letters a-z, A-Z, digits 0-9 "
            "and hyphens, and may not start or end with a hyphen"
        )
    return name


def validate_username(username: str) -> str:
    if USERNAME_RE.fullmatch(username) is None:
        raise InvalidValueError(
            "Invalid value provided: a username is 1-63 characters of letters, digits, '.', '_' and '-', "
            "starting and ending with a letter or digit"
        )
    return username
