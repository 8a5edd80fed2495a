"""Every setting, declared once as data: name, environment variable, default and help.

The CLI builds its options from this table and the README's settings table matches it.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

_SIZE_RE = re.compile(r"^\s*(\d{1,20})\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: str | int) -> int:
    """`128MiB`, `64k`, `1048576` -> bytes."""
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(value)
    if not m:
        raise ValueError(f"not a size: {value!r} (use e.g. 128MiB, 64KiB or a byte count)")
    unit = (m.group(2) or "").lower().rstrip("b").rstrip("i")
    return int(m.group(1)) * _SIZE_UNITS[unit]


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
MAX_DURATION_MS = 100 * 365 * 86_400_000
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(value: str | int | float) -> int:
    """`7d`, `12h`, `30m`, `1s`, `250ms` or a number of seconds -> milliseconds."""
    if isinstance(value, int | float):
        return int(value * 1000)
    m = _DURATION_RE.match(value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. 7d, 12h, 30m, 1s)")
    ms = float(m.group(1)) * _UNIT_MS[m.group(2) or "s"]
    if ms > MAX_DURATION_MS:
        raise ValueError(f"duration too long: {value!r} (at most 100 years)")
    return int(ms)


def _port(value: str | int) -> int:
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"not a port: {value!r} (0-65535)")
    return port


def _duration(value: str) -> str:
    parse_duration_ms(value)
    return str(value).strip()


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


LOG_FORMATS = ("auto", "json", "text")


def _log_format(value: str) -> str:
    v = value.strip().lower()
    if v not in LOG_FORMATS:
        raise ValueError(f"not a log format: {value!r} (use {', '.join(LOG_FORMATS)})")
    return v


def resolve_log_format(name: str, *, stream: Any = None) -> str:
    """`json` or `text`; `auto` is JSON unless the stream (standard output) is a terminal."""
    if name != "auto":
        return name
    stream = sys.stdout if stream is None else stream
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # no stream, or a closed one
        return "json"


def parse_networks(value: str) -> str:
    """`10.0.0.0/8, 127.0.0.1` -> `10.0.0.0/8,127.0.0.1/32` (checked; empty for none)."""
    parts = [p.strip() for p in str(value).split(",") if p.strip()]
    try:
        return ",".join(str(ipaddress.ip_network(p, strict=False)) for p in parts)
    except ValueError as e:
        raise ValueError(f"not an address or CIDR range: {e}") from None


def _pool_size(value: str | int) -> int:
    n = int(value)
    if n < 3:  # two carry the record path (backends/postgres/pipeline.py); the rest everything else
        raise ValueError(f"must be at least 3 connections, got {n}")
    return n


def _seconds_1_to_1800(value: str | int) -> int:
    n = int(value)
    if not 1 <= n <= 1800:
        raise ValueError(f"must be between 1 and 1800 seconds, got {n}")
    return n


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    env: str
    default: Any
    help: str
    parse: Callable[[Any], Any] = str
    metavar: str = "TEXT"


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "KVBOX_DATA_DIR", "./kvbox-data", "Directory for the database and record files.", Path, "DIR"),
    Setting("host", "KVBOX_HOST", "127.0.0.1", "Address to listen on.", str, "HOST"),
    Setting("port", "KVBOX_PORT", 8790, "Port to listen on (0 picks a free one).", _port, "PORT"),
    Setting(
        "public_url",
        "KVBOX_PUBLIC_URL",
        None,
        "Base URL used in URLs the server emits (default http://HOST:PORT).",
        str,
        "URL",
    ),
    Setting("workers", "KVBOX_WORKERS", 1, "Number of server worker processes.", int, "N"),
    Setting(
        "max_record_size",
        "KVBOX_MAX_RECORD_SIZE",
        128 << 20,
        "Largest record body accepted, stored or decoded (e.g. 128MiB).",
        parse_size,
        "SIZE",
    ),
    Setting(
        "inline_threshold",
        "KVBOX_INLINE_THRESHOLD",
        64 << 10,
        "Bodies up to this size live in the database, larger ones in files.",
        parse_size,
        "SIZE",
    ),
    Setting(
        "record_cache_size",
        "KVBOX_RECORD_CACHE_SIZE",
        16 << 20,
        "Record bodies each server process keeps in memory for reads (0: none).",
        parse_size,
        "SIZE",
    ),
    Setting(
        "durable",
        "KVBOX_DURABLE",
        False,
        "fsync every write so it also survives power loss (writes always survive a process kill).",
        parse_bool,
        "BOOL",
    ),
    Setting(
        "backend",
        "KVBOX_BACKEND",
        "sqlite",
        "Storage backend: sqlite (default), postgres (set by --metadata-url) or memory.",
        str,
        "NAME",
    ),
    Setting(
        "metadata_url",
        "KVBOX_METADATA_URL",
        None,
        "PostgreSQL URL of the shared index (postgresql://USER:PASSWORD@HOST/DB); selects the scale-out "
        "backend, with --blob-url.",
        str,
        "URL",
    ),
    Setting(
        "blob_url",
        "KVBOX_BLOB_URL",
        None,
        "Bucket and key prefix for record bodies of the scale-out backend (s3://BUCKET/PREFIX); credentials "
        "and region come from the standard AWS variables.",
        str,
        "URL",
    ),
    Setting(
        "s3_endpoint",
        "KVBOX_S3_ENDPOINT",
        None,
        "S3 endpoint URL for object stores other than AWS S3 (MinIO, Ceph RGW, R2 ...).",
        str,
        "URL",
    ),
    Setting(
        "metadata_pool_size",
        "KVBOX_METADATA_POOL_SIZE",
        10,
        "Most PostgreSQL connections each server process opens (at least 3).",
        _pool_size,
        "N",
    ),
    Setting(
        "stats_flush_interval",
        "KVBOX_STATS_FLUSH_INTERVAL",
        1.0,
        "Seconds between flushes of read/list counters to the database.",
        float,
        "SECONDS",
    ),
    Setting(
        "unnamed_retention",
        "KVBOX_UNNAMED_RETENTION",
        "7d",
        "How long an unnamed store is kept after its last write or access (e.g. 7d, 12h, 1s).",
        _duration,
        "DURATION",
    ),
    Setting(
        "sweep_interval",
        "KVBOX_SWEEP_INTERVAL",
        60.0,
        "Seconds between retention sweeps inside the server (0 turns the in-server sweeper off).",
        float,
        "SECONDS",
    ),
    Setting("rate_limits", "KVBOX_RATE_LIMITS", True, "Enforce rate limits (true/false).", parse_bool, "BOOL"),
    Setting(
        "rate_limit_store",
        "KVBOX_RATE_LIMIT_STORE",
        60,
        "Requests per second per store for store-level operations.",
        int,
        "N",
    ),
    Setting(
        "rate_limit_records",
        "KVBOX_RATE_LIMIT_RECORDS",
        200,
        "Requests per second per store for record reads, writes and deletes.",
        int,
        "N",
    ),
    Setting(
        "rate_limit_user",
        "KVBOX_RATE_LIMIT_USER",
        4000,
        "Requests per second per user (per client address when anonymous), across all stores.",
        int,
        "N",
    ),
    Setting(
        "trusted_proxies",
        "KVBOX_TRUSTED_PROXIES",
        "",
        "Proxy addresses (CIDR, comma-separated) whose X-Forwarded-For and X-Forwarded-Proto are believed.",
        parse_networks,
        "CIDR,...",
    ),
    Setting(
        "shutdown_timeout",
        "KVBOX_SHUTDOWN_TIMEOUT",
        30,
        "Seconds requests in flight get to finish after SIGTERM before the workers are stopped.",
        _seconds_1_to_1800,
        "SECONDS",
    ),
    Setting(
        "access_log",
        "KVBOX_ACCESS_LOG",
        True,
        "Write one access log line per request to standard output.",
        parse_bool,
        "BOOL",
    ),
    Setting(
        "log_format",
        "KVBOX_LOG_FORMAT",
        "auto",
        "Format of the access log and error logs: json, text, or auto (json unless standard output is a terminal).",
        _log_format,
        "FORMAT",
    ),
    Setting("metrics", "KVBOX_METRICS", True, "Collect Prometheus metrics for /metrics.", parse_bool, "BOOL"),
    Setting(
        "metrics_token",
        "KVBOX_METRICS_TOKEN",
        None,
        "Bearer token that opens /metrics (API tokens do not).",
        str,
        "TOKEN",
    ),
    Setting(
        "metrics_public",
        "KVBOX_METRICS_PUBLIC",
        False,
        "Serve /metrics to anyone, without a token.",
        parse_bool,
        "BOOL",
    ),
    Setting(
        "changes",
        "KVBOX_CHANGES",
        True,
        "Log every record change for the change feed and webhooks (false turns both off).",
        parse_bool,
        "BOOL",
    ),
    Setting(
        "changes_retention",
        "KVBOX_CHANGES_RETENTION",
        "7d",
        "How long record changes stay in the change feed (e.g. 7d, 12h).",
        _duration,
        "DURATION",
    ),
    Setting(
        "webhook_allow_private",
        "KVBOX_WEBHOOK_ALLOW_PRIVATE",
        False,
        "Let webhooks call loopback, private and link-local addresses.",
        parse_bool,
        "BOOL",
    ),
    Setting(
        "webhook_retry_delay",
        "KVBOX_WEBHOOK_RETRY_DELAY",
        "5s",
        "Wait before a failed webhook delivery's first retry; it doubles per retry, up to an hour.",
        _duration,
        "DURATION",
    ),
    Setting(
        "metrics_dir",
        "KVBOX_METRICS_DIR",
        None,
        "Where the workers of one server share their metrics (default DATA_DIR/metrics/PID, emptied at start).",
        Path,
        "DIR",
    ),
)

SETTINGS_BY_NAME: Mapping[str, Setting] = {s.name: s for s in SETTINGS}


@dataclass(slots=True)
class Settings:
    data_dir: Path = Path("./kvbox-data")
    host: str = "127.0.0.1"
    port: int = 8790
    public_url: str | None = None
    workers: int = 1
    max_record_size: int = 128 << 20
    inline_threshold: int = 64 << 10
    record_cache_size: int = 16 << 20
    durable: bool = False
    backend: str = "sqlite"
    metadata_url: str | None = None
    blob_url: str | None = None
    s3_endpoint: str | None = None
    metadata_pool_size: int = 10
    stats_flush_interval: float = 1.0
    unnamed_retention: str = "7d"
    sweep_interval: float = 60.0
    rate_limits: bool = True
    rate_limit_store: int = 60
    rate_limit_records: int = 200
    rate_limit_user: int = 4000
    trusted_proxies: str = ""
    shutdown_timeout: int = 30
    access_log: bool = True
    log_format: str = "auto"
    metrics: bool = True
    metrics_token: str | None = None
    metrics_public: bool = False
    changes: bool = True
    changes_retention: str = "7d"
    webhook_allow_private: bool = False
    webhook_retry_delay: str = "5s"
    metrics_dir: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        """The public base URL without a trailing slash."""
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then environment variables, then explicit overrides (e.g. CLI options)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for s in SETTINGS:
            raw = overrides.get(s.name)
            if raw is None and s.env in env:
                raw = env[s.env]
            if raw is None:
                raw = s.default
            values[s.name] = s.parse(raw) if raw is not None else None
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_env(self) -> dict[str, str]:
        """The environment that makes `from_env` rebuild these settings (for worker processes)."""
        out: dict[str, str] = {}
        for s in SETTINGS:
            value = getattr(self, s.name)
            if value is not None:
                out[s.env] = str(value)
        return out
