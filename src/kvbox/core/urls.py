"""Where stores and records live in the API: the one home of their URL shapes.

The API, the console and the client all build record URLs here, so a `recordPublicUrl`
handed out by the server, a link in the console and a URL made by the client agree.
"""

from __future__ import annotations

import re
from urllib.parse import quote

STORES_PATH = "/v2/key-value-stores"
# Characters a record key may hold that need no escaping in a path segment (RFC 3986 sub-delims).
_KEY_SAFE = "!'()"
# Segments made only of these stay as they are (a valid key or store reference always does):
# the check is cheaper than quoting, and record URLs are built on every write.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9!'()\-_.~]*")
_PLAIN_STORE = re.compile(r"[A-Za-z0-9\-_.~]*")


def key_segment(key: str) -> str:
    """A record key as one path segment: a "/" inside a key is escaped, never a separator."""
    return key if _PLAIN_KEY.fullmatch(key) else quote(key, safe=_KEY_SAFE)


def store_segment(store_ref: str) -> str:
    """A store ID, `~name` or `owner~name` as one path segment."""
    return store_ref if _PLAIN_STORE.fullmatch(store_ref) else quote(store_ref, safe="~")


def store_path(store_ref: str) -> str:
    return f"{STORES_PATH}/{store_segment(store_ref)}"


def records_path(store_ref: str) -> str:
    return f"{store_path(store_ref)}/records"


def record_path(store_ref: str, key: str) -> str:
    return f"{records_path(store_ref)}/{key_segment(key)}"


def record_url(base_url: str, store_ref: str, key: str, *, signature: str | None = None) -> str:
    """The absolute URL of a record, with `?signature=` when one is given."""
    url = base_url.rstrip("/") + record_path(store_ref, key)
    return f"{url}?signature={signature}" if signature else url
