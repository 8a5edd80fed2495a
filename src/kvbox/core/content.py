"""The one rule for turning record bytes into values and back, and content-type helpers."""

from __future__ import annotations

import json
from typing import Any

JSON_TYPE = "application/json; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
BINARY_TYPE = "application/octet-stream"


def media_type(content_type: str | None) -> str:
    """`Text/HTML; charset=x` -> `text/html`."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


def is_json_type(content_type: str | None) -> bool:
    mt = media_type(content_type)
    return mt == "application/json" or mt.endswith("+json")


def is_text_type(content_type: str | None) -> bool:
    mt = media_type(content_type)
    return mt.startswith("text/") or (mt.startswith("application/") and mt.endswith("xml"))


def charset(content_type: str | None, default: str = "utf-8") -> str:
    if not content_type:
        return default
    for param in content_type.split(";")[1:]:
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return default


def decode_value(body: bytes, content_type: str | None) -> Any:
    """JSON is parsed, text is decoded, everything else stays bytes."""
    if is_json_type(content_type):
        return json.loads(body.decode(charset(content_type)))
    if is_text_type(content_type):
        return body.decode(charset(content_type), errors="replace")
    return body


def encode_value(value: Any, content_type: str | None = None) -> tuple[bytes, str]:
    """Serialise a value for storage; infers the content type when none is given."""
    if content_type is None:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value), BINARY_TYPE
        if isinstance(value, str):
            return value.encode(), TEXT_TYPE
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode(), JSON_TYPE
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value), content_type
    if is_json_type(content_type) and not isinstance(value, str):
        return json.dumps(value, ensure_ascii=False, allow_nan=False).encode(charset(content_type)), content_type
    if isinstance(value, str):
        return value.encode(charset(content_type)), content_type
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode(), content_type
