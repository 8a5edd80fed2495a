"""The local folder layout: which file holds which key, and with which content type.

kvbox writes `{KEY}.{EXT}`, EXT from the content type, plus a `{KEY}.{EXT}.__metadata__.json`
sidecar only when the extension does not stand for the exact content type. It also reads
the crawlee-python 1.x layout (percent-encoded key, no extension, sidecar required) and the
Crawlee JS / crawlee-python 0.x one (`{KEY}.{EXT}`, optional sidecar). Pure: no I/O here.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from urllib.parse import quote

from kvbox.core.content import BINARY_TYPE, JSON_TYPE, TEXT_TYPE, media_type

STORES_SUBDIR = "key_value_stores"
DEFAULT_STORE_DIR = "default"
METADATA_FILE = "__metadata__.json"
SIDECAR_SUFFIX = "." + METADATA_FILE
TEMP_SUFFIX = ".tmp"
TEMP_PREFIX = ".kvbox-"
MAX_NAME_BYTES = 255  # NAME_MAX of ext4, XFS, APFS and NTFS (in UTF-16 units there)
LONG_KEY_PREFIX = 200

# The extension kvbox writes for a content type, and the exact type a bare file of that
# extension stands for. Order matters: it is the precedence when one key has several files.
EXTENSION_TYPES: dict[str, str] = {
    "json": JSON_TYPE,
    "txt": TEXT_TYPE,
    "bin": BINARY_TYPE,
    "html": "text/html; charset=utf-8",
    "xml": "application/xml",
    "csv": "text/csv; charset=utf-8",
    "md": "text/markdown; charset=utf-8",
    "css": "text/css; charset=utf-8",
    "js": "text/javascript; charset=utf-8",
    "svg": "image/svg+xml",
    "png": "image/png",
    "jpg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "avif": "image/avif",
    "bmp": "image/bmp",
    "ico": "image/x-icon",
    "pdf": "application/pdf",
    "zip": "application/zip",
    "gz": "application/gzip",
    "mp3": "audio/mpeg",
    "wav": "audio/wav",
    "mp4": "video/mp4",
    "webm": "video/webm",
}
# Written by other tools (Crawlee JS names JPEGs `.jpeg`); read, never written.
READ_ALIASES: dict[str, str] = {"jpeg": "image/jpeg", "htm": "text/html", "yaml": "application/yaml"}

_EXTENSION_FOR_MEDIA: dict[str, str] = {media_type(t): ext for ext, t in EXTENSION_TYPES.items()}
_EXTENSION_FOR_MEDIA.update({"text/xml": "xml", "image/jpg": "jpg", "text/plain": "txt", "text/html": "html"})

PROBE_EXTENSIONS: tuple[str, ...] = (*EXTENSION_TYPES, *READ_ALIASES)


def extension_for(content_type: str) -> str:
    """The extension kvbox writes for a content type."""
    mt = media_type(content_type)
    ext = _EXTENSION_FOR_MEDIA.get(mt)
    if ext is not None:
        return ext
    if mt.endswith("+json"):
        return "json"
    if mt.endswith("+xml"):
        return "xml"
    if mt.startswith("text/"):
        return "txt"
    return "bin"


def value_filename(key: str, content_type: str) -> tuple[str, bool]:
    """The file for a record, and whether it needs a sidecar to keep the exact content type.

    The extension is always appended, even when the key already ends with it (`shot.png`
    becomes `shot.png.png`), so the key is always the file name minus one extension.
    Keys too long for a file name (with its sidecar's) get a shortened name and a sidecar.
    """
    ext = extension_for(content_type)
    name = f"{key}.{ext}"
    if len(name.encode()) + len(SIDECAR_SUFFIX) > MAX_NAME_BYTES:
        return long_filename(key, ext), True
    return name, EXTENSION_TYPES[ext] != content_type


def long_filename(key: str, ext: str) -> str:
    # `~` never occurs in a valid key, so a shortened name cannot be another key's plain name.
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return f"{key[:LONG_KEY_PREFIX]}~{digest}.{ext}"


def sidecar_name(filename: str) -> str:
    return filename + SIDECAR_SUFFIX


def crawlee_filename(key: str) -> str:
    """The crawlee-python 1.x file name of a key: the key percent-encoded, no extension."""
    return quote(key, safe="")


def candidate_filenames(key: str) -> list[str]:
    """Every file name that may hold `key`, most preferred first."""
    names = [f"{key}.{ext}" for ext in PROBE_EXTENSIONS]
    if len(key.encode()) + len(SIDECAR_SUFFIX) + 6 > MAX_NAME_BYTES:
        names += [long_filename(key, ext) for ext in EXTENSION_TYPES]
    names.append(crawlee_filename(key))
    if "/" not in key and key not in (".", ".."):
        names.append(key)  # crawlee-python 0.x and hand-made files keep the key verbatim
    unique = dict.fromkeys(n for n in names if len(n.encode()) <= MAX_NAME_BYTES)
    return list(unique)


def type_for_extension(ext: str) -> str | None:
    ext = ext.lower()
    known = EXTENSION_TYPES.get(ext) or READ_ALIASES.get(ext)
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type("x." + ext, strict=False)
    return guessed


@dataclass(frozen=True, slots=True)
class Entry:
    """A value file found on disk: its key and content type as far as the name tells."""

    filename: str
    key: str
    content_type: str
    extension_known: bool


def classify(filename: str) -> Entry | None:
    """What a file without a sidecar holds, or None when it is not a record (temp files, metadata).

    The key is the name minus a known extension; a name without one is the key itself,
    holding bytes.
    """
    found = key_and_type(filename)
    if found is None:
        return None
    key, ctype = found
    return Entry(filename, key, ctype, key != filename)


def key_and_type(filename: str) -> tuple[str, str] | None:
    """`classify` without the object, for listing thousands of files."""
    if filename.endswith((SIDECAR_SUFFIX, TEMP_SUFFIX)) or filename == METADATA_FILE:
        return None
    stem, _, ext = filename.rpartition(".")
    if stem:
        ctype = EXTENSION_TYPES.get(ext) or type_for_extension(ext)
        if ctype is not None:
            return stem, ctype
    return filename, BINARY_TYPE


def is_reserved(filename: str) -> bool:
    """Files of the layout itself: store metadata and sidecars."""
    return filename == METADATA_FILE or filename.endswith(SIDECAR_SUFFIX)


def valid_store_dir_name(name: str) -> bool:
    """A store folder name must stay one folder below `key_value_stores`."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name
