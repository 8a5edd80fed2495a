"""The access log (one line per request, on standard output) and the error log's format.

Lines are JSON objects or plain text (`--log-format`; `auto` means JSON unless standard
output is a terminal). Access lines are built without the `logging` machinery and handed to
the operating system in batches, every `FLUSH_AFTER_S` or `FLUSH_LINES` lines and at
shutdown, in writes that end on a line, so the lines of several worker processes never
interleave: at most `PIPE_BUF` bytes to a pipe or socket (the most the system writes to
one at once), whole batches to a file (whose writes the system never interleaves). Few
writes matter beyond the system calls: a write lets go of the interpreter's lock, and a
busy worker then waits for the server's threads to hand it back.

Error logs go through `logging` to standard error, in the same format, with the request's
id, at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import sys
import time
import traceback
from collections.abc import Sequence
from contextvars import ContextVar
from json.encoder import encode_basestring
from typing import Any

from kvbox.api.http import Scope
from kvbox.api.later import Later
from kvbox.service.settings import resolve_log_format

USER_KEY = "kvbox.user"
"""Scope key under which the API leaves the authenticated user's name."""
STORE_KEY = "kvbox.store"
"""Scope key under which the API leaves the store segment of a store's route (ID, `~name` or
`owner~name`)."""
Who = tuple[str, str, str | None, str | None, str | None]
"""What a request's line shares with many others: method, route, client address, store and
user (the last three when known)."""
Answered = tuple[Who, str, str, int, int, int, float, float]
"""An answered request: who, path, request id, status, bytes in, bytes out, seconds taken,
and when it ended (`time.perf_counter()`). A batch waiting to be logged keeps no request's
scope alive."""


def who_of(scope: Scope, route: str) -> Who:
    """The `Who` of a request whose scope the API (or the console) has filled in."""
    client = scope.get("client")
    return (scope["method"], route, client[0] if client else None, scope.get(STORE_KEY), scope.get(USER_KEY))


REQUEST_ID: ContextVar[str] = ContextVar("kvbox_request_id", default="-")
"""The id of the request being served, for log lines written while serving it."""

PIPE_BUF = 4096
FILE_CHUNK = 1 << 16
# A system call per request would cost more than the line: lines wait this long, or for this many.
FLUSH_AFTER_S = 0.1
FLUSH_LINES = 256
MAX_ENCODED = 256
_MILLI = tuple(f"{n:03d}" for n in range(1000))


class _Stamp:
    """ISO 8601 UTC times with milliseconds, made once per millisecond (the part up to the
    second once per second): many requests end within one. `ms` and `text` are the last
    time made, for callers that check the millisecond themselves."""

    def __init__(self) -> None:
        self.ms = -1
        self.text = ""
        self._second = -1
        self._prefix = ""

    def __call__(self, now: float) -> str:
        ms = int(now * 1000)
        if ms != self.ms:
            second = ms // 1000
            if second != self._second:
                self._second = second
                self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.ms = ms
            self.text = f"{self._prefix}.{_MILLI[ms % 1000]}Z"
        return self.text


def _millis(seconds: float) -> str:
    """Seconds as milliseconds with three decimals."""
    us = int(seconds * 1e6 + 0.5)
    return f"{us // 1000}.{_MILLI[us % 1000]}"


class AccessLog:
    def __init__(self, fmt: str, *, fd: int = 1) -> None:
        self.format = resolve_log_format(fmt)
        self._fd = fd
        self._chunk = chunk_size(fd)
        self._stamp = _Stamp()
        self._lines = self._json if self.format == "json" else self._text
        self._pending: list[str] = []
        self._write_later = Later(self.flush, FLUSH_AFTER_S)
        self._tails: dict[Who, str] = {}

    def requests(self, answered: Sequence[Answered]) -> None:
        """Log answered requests; written within `FLUSH_AFTER_S`."""
        pending = self._pending
        pending += self._lines(answered, time.time() - time.perf_counter())
        if len(pending) >= FLUSH_LINES:
            self.flush()
            return
        try:
            self._write_later.ask()
        except RuntimeError:  # no loop: write at once
            self.flush()

    def _json(self, answered: Sequence[Answered], wall: float) -> list[str]:
        """JSON lines; `wall` turns `perf_counter` times into wall-clock times.

        The hottest loop of a busy server after the request itself: the time text is made
        again only when the millisecond changes, and the duration is formatted from integer
        microseconds."""
        stamp, tails, tail_of = self._stamp, self._tails, self._tail
        last_ms, now = stamp.ms, stamp.text
        lines: list[str] = []
        append = lines.append
        for who, path, request_id, status, received, sent, seconds, ended in answered:
            tail = tails.get(who) or tail_of(who)
            if int((ended + wall) * 1000) != last_ms:
                now = stamp(ended + wall)
                last_ms = stamp.ms
            us = int(seconds * 1e6 + 0.5)  # `_millis`, inlined: a call would add about 7% to a line
            # The request id is the caller's only when it needs no escaping (see middleware.py).
            append(
                f'{{"time":"{now}","level":"info","type":"access","request_id":"{request_id}",'
                f'"status":{status},"bytes_in":{received},"bytes_out":{sent},'
                f'"duration_ms":{us // 1000}.{_MILLI[us % 1000]},"path":{encode_basestring(path)},{tail}}}\n'
            )
        return lines

    def _tail(self, who: Who) -> str:
        """The end of a line: method, route, client, store and user, which recur together. The
        first `MAX_ENCODED` combinations are kept encoded."""
        method, route, client, store, user = (encode_basestring(v) if v else "null" for v in who)
        tail = f'"method":{method},"route":{route},"client":{client},"store":{store},"user":{user}'
        if len(self._tails) < MAX_ENCODED:
            self._tails[who] = tail
        return tail

    def _text(self, answered: Sequence[Answered], wall: float) -> list[str]:
        lines = []
        for who, path, request_id, status, received, sent, seconds, ended in answered:
            method, route, client, store, user = who
            lines.append(
                f"{self._stamp(ended + wall)} {client or '-'} {request_id} "
                f'"{method} {_printable(path)}" {status} '
                f"in={received} out={sent} {_millis(seconds)}ms route={route} store={_printable(store or '-')} "
                f"user={_printable(user or '-')}\n"
            )
        return lines

    def flush(self) -> None:
        """Write the lines logged so far."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        data = "".join(pending).encode("utf-8", "replace")
        view = memoryview(data)
        start, end = 0, len(data)
        while start < end:
            stop = start + self._chunk
            if stop < end:  # end the write on the last line that fits; a longer line goes alone
                cut = data.rfind(b"\n", start, stop)
                stop = cut + 1 if cut >= 0 else (data.find(b"\n", stop) + 1 or end)
            self._write(view[start:stop])
            start = stop

    def _write(self, view: memoryview) -> None:
        with contextlib.suppress(OSError):  # a closed or full log stream must never fail a request
            while view:
                view = view[os.write(self._fd, view) :]


def chunk_size(fd: int) -> int:
    """The most bytes one write of whole lines may carry to `fd` without interleaving."""
    try:
        return FILE_CHUNK if stat.S_ISREG(os.fstat(fd).st_mode) else PIPE_BUF
    except OSError:
        return PIPE_BUF


def _printable(value: str) -> str:
    """Text-log fields stay on one line and unambiguous: spaces and controls escaped."""
    if value.isprintable() and " " not in value and '"' not in value:
        return value
    return json.dumps(value, ensure_ascii=True)[1:-1].replace(" ", "\\u0020").replace('\\"', "\\u0022")


class LogFormatter(logging.Formatter):
    """Error and warning records as one JSON object per line, or as text, with the request id."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self.json = resolve_log_format(fmt, stream=sys.stderr) == "json"
        self._stamp = _Stamp()

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        error = "".join(traceback.format_exception(*record.exc_info)) if record.exc_info else None
        request_id = REQUEST_ID.get()
        if self.json:
            entry: dict[str, Any] = {
                "time": self._stamp(record.created),
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": message,
                "request_id": request_id,
            }
            if error:
                entry["error"] = error
            return json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        head = f"{self._stamp(record.created)} {record.levelname} {record.name} [{request_id}] {message}"
        return f"{head}\n{error.rstrip()}" if error else head


def configure_logging(fmt: str) -> None:
    """Send kvbox's own log records to standard error in the chosen format (server processes)."""
    logger = logging.getLogger("kvbox")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogFormatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
