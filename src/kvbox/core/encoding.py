"""Content-Encoding names and Accept-Encoding negotiation."""

from __future__ import annotations

from kvbox.core.errors import UnsupportedContentEncodingError

IDENTITY = "identity"
SUPPORTED_ENCODINGS = ("identity", "gzip", "deflate", "br")
_ALIASES = {"x-gzip": "gzip", "": "identity"}


def normalize_encoding(header: str | None) -> str:
    """Map a Content-Encoding header to one supported name or raise 415."""
    if header is None:
        return IDENTITY
    value = header.strip().lower()
    value = _ALIASES.get(value, value)
    if value not in SUPPORTED_ENCODINGS:
        raise UnsupportedContentEncodingError(header.strip())
    return value


def accepts(accept_encoding: str | None, encoding: str) -> bool:
    """Whether an Accept-Encoding header allows `encoding` (q=0 refuses; `*` matches the rest)."""
    if encoding == IDENTITY:
        return True
    if not accept_encoding:
        return False
    star: bool | None = None
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        q = 1.0
        for param in params.split(";"):
            k, _, v = param.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        name = _ALIASES.get(name, name)
        if name == encoding:
            return q > 0
        if name == "*":
            star = q > 0
    return bool(star)
