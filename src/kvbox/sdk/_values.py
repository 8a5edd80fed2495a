"""The value rules of the SDK, the same in local and remote mode and in both twins.

- Writing: bytes are `application/octet-stream`, str is `text/plain; charset=utf-8`, any
  other value (dict, list, int, bool, float) is JSON, unless a content type is given; a str
  given with a JSON content type is sent as it is (not encoded twice). `None` deletes.
- Reading: JSON content types are parsed, `text/*` and `application/*xml` decoded to str,
  everything else returned as bytes. A crawlee `application/x-none` record reads as None.
"""

from __future__ import annotations

import json
import math
from datetime import timedelta
from typing import Any

from kvbox.core.content import decode_value, encode_value, media_type
from kvbox.core.errors import InvalidRecordKeyError, StorageError
from kvbox.core.keys import validate_key
from kvbox.core.names import validate_store_name

# crawlee-python stores a None value as an empty record of this type.
NONE_TYPE = "application/x-none"


def encode(key: str, value: Any, content_type: str | None) -> tuple[bytes, str]:
    """Bytes and content type to store; the key must follow the platform's rule in both modes."""
    validate_key(key)
    try:
        return encode_value(value, content_type)
    except (TypeError, ValueError) as err:
        raise ValueError(f"The value for key {key!r} cannot be stored as {content_type or 'JSON'}: {err}") from err


def check_read_key(key: str, *, remote: bool) -> None:
    """Remote keys follow the platform's rule; local reads also reach keys crawlee wrote freely."""
    if remote:
        validate_key(key)
    elif not isinstance(key, str) or not key:
        raise InvalidRecordKeyError("Record key must be a non-empty string")


def decode(key: str, data: bytes, content_type: str | None) -> Any:
    """The value of stored bytes. `content_type` None means a bare input file: JSON if it parses."""
    if content_type is None:
        try:
            return json.loads(data)
        except ValueError:
            return data
    if media_type(content_type) == NONE_TYPE:
        return None
    try:
        return decode_value(data, content_type)
    except (ValueError, LookupError) as err:
        raise StorageError(f"Record {key!r} is not valid {content_type}") from err


def check_range(offset: int, length: int | None) -> None:
    """A range from `offset` (negative: the last `-offset` bytes, with no `length`)."""
    if length is not None and (length < 0 or offset < 0):
        raise ValueError("length must not be negative, and a negative offset (the last bytes) takes no length")


def check_open_args(name: str | None, id: str | None) -> None:
    if name is not None and id is not None:
        raise ValueError('Only one of "id" and "name" can be given')
    if name is not None:
        validate_store_name(name)
    if id is not None and not id:
        raise ValueError("The store ID must not be empty")


def expiry_seconds(expires_in: float | timedelta | None) -> int | None:
    """Whole seconds until a record expires (rounded up: never earlier than asked), or None."""
    if expires_in is None:
        return None
    seconds = expires_in.total_seconds() if isinstance(expires_in, timedelta) else float(expires_in)
    if not seconds > 0:
        raise ValueError(f"expires_in must be positive, not {expires_in!r}")
    return math.ceil(seconds)
