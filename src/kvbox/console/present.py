"""How values look on a page: sizes, times, durations, links, and record previews."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from markupsafe import Markup, escape

from kvbox.core.content import charset, is_json_type, is_text_type, media_type
from kvbox.core.models import GeneralAccess
from kvbox.core.urls import key_segment, store_segment

IMAGE_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp", "image/svg+xml", "image/x-icon",
     "image/vnd.microsoft.icon"}
)  # fmt: skip
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
JSON_TREE_LIMIT = 256 * 1024  # bigger JSON is shown pretty-printed as plain text
JSON_TREE_NODES = 5000
HEX_BYTES = 512

_UNITS = ("B", "KB", "MB", "GB", "TB")

ACCESS_LABELS = {
    GeneralAccess.RESTRICTED: "Restricted",
    GeneralAccess.ANYONE_WITH_ID_CAN_READ: "Anyone with the ID can read",
    GeneralAccess.ANYONE_WITH_NAME_CAN_READ: "Anyone with the name can read",
    GeneralAccess.FOLLOW_USER_SETTING: "Follow the owner's setting",
}


def size(n: int | None) -> str:
    """1536 -> '1.5 KB' (binary multiples, as the Apify Console shows them)."""
    if n is None:
        return "—"
    if n < 1024:
        return f"{n} B"
    exp = min(int(math.log(n, 1024)), len(_UNITS) - 1)
    value = n / 1024**exp
    return f"{value:.1f} {_UNITS[exp]}" if value < 100 else f"{value:.0f} {_UNITS[exp]}"


def number(n: int) -> str:
    return f"{n:,}"


def iso(ms: int | None) -> str:
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def when(ms: int | None) -> Markup:
    """A `<time>` element in UTC; the console script shows it in the reader's own time zone."""
    if ms is None:
        return Markup("—")
    text = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return Markup('<time datetime="{}">{}</time>').format(iso(ms), text)


def duration(ms: int) -> str:
    """A coarse human duration: '7 days', '12 hours', '5 minutes'."""
    for unit, length in (("day", 86_400_000), ("hour", 3_600_000), ("minute", 60_000)):
        if ms >= length:
            n = round(ms / length)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    n = max(round(ms / 1000), 0)
    return f"{n} second{'s' if n != 1 else ''}"


def deleted_in(expires_at: int | None, now_ms: int) -> str | None:
    """'in 6 days' for a store that will expire, None for a kept one."""
    if expires_at is None:
        return None
    left = expires_at - now_ms
    return "within a minute" if left < 60_000 else "in " + duration(left)


# URLs of console pages (one place, so that keys are always quoted the same way)


def store_url(store_id: str, tab: str | None = None, **params: str | int | None) -> str:
    url = f"/stores/{store_segment(store_id)}" + (f"/{tab}" if tab else "")
    return with_query(url, **params)


def record_url(store_id: str, key: str, action: str | None = None, **params: str | int | None) -> str:
    url = f"{store_url(store_id)}/records/{key_segment(key)}" + (f"/{action}" if action else "")
    return with_query(url, **params)


def with_query(url: str, **params: str | int | None) -> str:
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return f"{url}?{urlencode(kept)}" if kept else url


# Record previews


def preview_kind(content_type: str) -> str:
    """json, text, image, video, audio, html or binary: how the record page shows a value."""
    mt = media_type(content_type)
    if mt in HTML_TYPES:
        return "html"
    if mt in IMAGE_TYPES:
        return "image"
    if mt.startswith(("video/", "audio/")):
        return mt.split("/", 1)[0]  # played by the browser, which reads it in ranges as it seeks
    if is_json_type(content_type):
        return "json"
    if is_text_type(content_type) or mt in ("application/javascript", "application/x-ndjson", "application/csv"):
        return "text"
    return "binary"


def decode_text(data: bytes, content_type: str) -> str:
    try:
        return data.decode(charset(content_type), errors="replace")
    except LookupError:  # an unknown charset name
        return data.decode("utf-8", errors="replace")


def hex_dump(data: bytes, *, limit: int = HEX_BYTES) -> str:
    """The classic 16-bytes-a-line dump: offset, hex, printable characters."""
    lines = []
    for offset in range(0, min(len(data), limit), 16):
        chunk = data[offset : offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:08x}  {hexes:<47}  {text}")
    return "\n".join(lines)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def json_tree(value: Any) -> Markup:
    """Pretty-printed JSON whose objects and arrays fold open and shut (`<details>`; no script needed)."""
    budget = [JSON_TREE_NODES]
    return Markup("".join(_node(value, None, budget, depth=0, last=True)))


def _scalar(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    kind = "null" if value is None else "bool" if isinstance(value, bool) else type(value).__name__
    kind = {"int": "num", "float": "num", "str": "str"}.get(kind, kind)
    return f'<span class="j-{kind}">{escape(text)}</span>'


def _label(key: str | None) -> str:
    return "" if key is None else f'<span class="j-key">{escape(json.dumps(key, ensure_ascii=False))}</span>: '


def _node(value: Any, key: str | None, budget: list[int], *, depth: int, last: bool) -> list[str]:
    comma = "" if last else ","
    budget[0] -= 1
    if budget[0] < 0:
        return ['<div class="j-line j-more">…</div>'] if budget[0] == -1 else []
    if not isinstance(value, dict | list):
        return [f'<div class="j-line">{_label(key)}{_scalar(value)}{comma}</div>']
    is_obj = isinstance(value, dict)
    opener, closer = ("{", "}") if is_obj else ("[", "]")
    if not value:
        return [f'<div class="j-line">{_label(key)}{opener}{closer}{comma}</div>']
    count = len(value)
    summary = f"{count} {'key' if is_obj else 'item'}{'s' if count != 1 else ''}"
    out = [
        f'<details class="j-node"{" open" if depth < 3 else ""}><summary>{_label(key)}{opener}'
        f'<span class="j-count"> {summary} </span></summary><div class="j-body">'
    ]
    items: list[tuple[str | None, Any]] = (
        [(str(k), v) for k, v in value.items()] if isinstance(value, dict) else [(None, v) for v in value]
    )
    for i, (k, v) in enumerate(items):
        out += _node(v, k, budget, depth=depth + 1, last=i == count - 1)
    out.append(f'</div><div class="j-line">{closer}{comma}</div></details>')
    return out
