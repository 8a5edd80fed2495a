"""Prometheus metrics of a server, summed over the worker processes of one `kvbox serve`.

On the request path a request costs one dict lookup and a few additions to plain
in-process tables (`Metrics.request`). Other parts keep plain counters of their own (the
rate limiter's refusals, read cache hits, housekeeping work, group-commit batch sizes),
read when a snapshot is taken. Every second each worker writes its snapshot to the shared
metrics directory (one file per process, replaced whole); a scrape sums every worker's file,
its own snapshot taken fresh, and renders the Prometheus text format. So counts of other
workers lag by up to a second, and the counts of a worker that exited keep counting.

A new part adds a `Family` to `FAMILIES` and either feeds a `Counter` from
`Metrics.counter(family)` as things happen (webhook deliveries by outcome are declared
here for the webhook service to feed) or registers a `Source` that reports its own counts.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from kvbox.core.models import Totals

Labels = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Family:
    """One metric: its name, kind (`counter`, `histogram` or `gauge`), help and label names."""

    name: str
    kind: str
    help: str
    labels: Labels = ()
    bounds: tuple[float, ...] = ()  # histogram bucket upper bounds, +Inf implied


LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BOUNDS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)

HTTP_REQUESTS = Family(
    "kvbox_http_requests_total", "counter", "Requests answered, by route pattern, method and status.",
    ("route", "method", "status"),
)  # fmt: skip
HTTP_DURATION = Family(
    "kvbox_http_request_duration_seconds", "histogram", "Time from a request's arrival to the end of its response.",
    ("route", "method"), LATENCY_BOUNDS,
)  # fmt: skip
HTTP_IN = Family("kvbox_http_request_bytes_total", "counter", "Request body bytes received.", ("route", "method"))
HTTP_OUT = Family("kvbox_http_response_bytes_total", "counter", "Response body bytes sent.", ("route", "method"))
RATE_LIMITED = Family(
    "kvbox_rate_limited_requests_total", "counter", "Requests refused with 429, by the limit they hit.", ("limit",)
)
CACHE_LOOKUPS = Family(
    "kvbox_read_cache_lookups_total", "counter", "Read cache lookups, by cache and result (hit or miss).",
    ("cache", "result"),
)  # fmt: skip
GROUP_COMMIT = Family(
    "kvbox_index_group_commit_size", "histogram", "Writes committed together in one SQLite transaction.",
    (), BATCH_BOUNDS,
)  # fmt: skip
HOUSEKEEPING = Family(
    "kvbox_housekeeping_total", "counter",
    "Background work done: expired stores deleted, expired records reclaimed, blobs of deleted stores reclaimed, "
    "orphaned blobs removed.",
    ("work",),
)  # fmt: skip
WEBHOOK_DELIVERIES = Family(
    "kvbox_webhook_deliveries_total", "counter", "Webhook delivery attempts, by outcome.", ("outcome",)
)
STORES = Family("kvbox_stores", "gauge", "Stores in the deployment.")
RECORDS = Family("kvbox_records", "gauge", "Records in the deployment.")
STORED_BYTES = Family("kvbox_stored_bytes", "gauge", "Bytes of record bodies in the deployment, as stored.")

FAMILIES: tuple[Family, ...] = (
    HTTP_REQUESTS, HTTP_DURATION, HTTP_IN, HTTP_OUT, RATE_LIMITED, CACHE_LOOKUPS, GROUP_COMMIT, HOUSEKEEPING,
    WEBHOOK_DELIVERIES, STORES, RECORDS, STORED_BYTES,
)  # fmt: skip
_BY_NAME = {f.name: f for f in FAMILIES}

# A request's cell: latency bucket counts (the last is +Inf), then the latency sum, bytes in, bytes out.
_BUCKETS = len(LATENCY_BOUNDS) + 1
_SUM, _IN, _OUT = _BUCKETS, _BUCKETS + 1, _BUCKETS + 2


class Snapshot:
    """Counter values and histogram buckets by family and labels; snapshots add up."""

    def __init__(self) -> None:
        self.values: dict[str, dict[Labels, float]] = {}
        self.buckets: dict[str, dict[Labels, list[float]]] = {}  # bucket counts..., then the sum

    def add(self, family: Family, labels: Labels, value: float) -> None:
        table = self.values.setdefault(family.name, {})
        table[labels] = table.get(labels, 0) + value

    def add_buckets(self, family: Family, labels: Labels, counts: Iterable[float]) -> None:
        table = self.buckets.setdefault(family.name, {})
        counts = list(counts)
        held = table.get(labels)
        table[labels] = counts if held is None else [a + b for a, b in zip(held, counts, strict=True)]

    def merge(self, other: Snapshot) -> None:
        for name, table in other.values.items():
            for labels, value in table.items():
                self.add(_BY_NAME[name], labels, value)
        for name, rows in other.buckets.items():
            for labels, counts in rows.items():
                self.add_buckets(_BY_NAME[name], labels, counts)

    def to_json(self) -> str:
        return json.dumps(
            {
                "values": {n: [[*k, v] for k, v in t.items()] for n, t in self.values.items()},
                "buckets": {n: [[list(k), c] for k, c in t.items()] for n, t in self.buckets.items()},
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Snapshot:
        data = json.loads(text)
        snap = cls()
        for name, rows in data.get("values", {}).items():
            if name in _BY_NAME:
                for *labels, value in rows:
                    snap.add(_BY_NAME[name], tuple(labels), value)
        for name, rows in data.get("buckets", {}).items():
            if name in _BY_NAME:
                for labels, counts in rows:
                    snap.add_buckets(_BY_NAME[name], tuple(labels), counts)
        return snap


def histogram_of(sizes: Mapping[int, int], bounds: tuple[float, ...]) -> list[float]:
    """Bucket counts (the last +Inf) and the sum of values given as value -> occurrences."""
    counts = [0.0] * (len(bounds) + 2)
    for value, n in sizes.items():
        counts[bisect.bisect_left(bounds, value)] += n
        counts[-1] += value * n
    return counts


class Counter:
    """A counter fed as things happen: `inc(*label_values)`."""

    def __init__(self, family: Family) -> None:
        self.family = family
        self.values: dict[Labels, float] = {}

    def inc(self, *labels: str, by: float = 1) -> None:
        self.values[labels] = self.values.get(labels, 0) + by


Source = Callable[[Snapshot], None]
"""Adds a part's own counts to a snapshot when one is taken."""


class Metrics:
    """The metrics of one process; `directory` is shared by the workers of one server."""

    def __init__(
        self,
        *,
        enabled: bool = True,
        directory: Path | None = None,
        totals: Callable[[], Awaitable[Totals]] | None = None,
    ) -> None:
        self.enabled = enabled
        self.directory = directory
        self._totals = totals
        self._http: dict[tuple[str, str, int], list[float]] = {}
        self._counters: dict[str, Counter] = {}
        self._sources: list[Source] = []
        self._settlers: list[Callable[[], None]] = []
        self._written: str | None = None

    def request(self, route: str, method: str, status: int, seconds: float, bytes_in: int, bytes_out: int) -> None:
        """Count one answered request (on the request path: keep it cheap)."""
        cell = self._http.get((route, method, status))
        if cell is None:
            cell = self._http[(route, method, status)] = [0.0] * (_BUCKETS + 3)
        cell[bisect.bisect_left(LATENCY_BOUNDS, seconds)] += 1
        cell[_SUM] += seconds
        cell[_IN] += bytes_in
        cell[_OUT] += bytes_out

    def counter(self, family: Family) -> Counter:
        """The process's counter of `family`, made on first use."""
        found = self._counters.get(family.name)
        if found is None:
            found = self._counters[family.name] = Counter(family)
        return found

    def watch(self, source: Source) -> None:
        self._sources.append(source)

    def settle_with(self, hook: Callable[[], None]) -> None:
        """Run `hook` before every snapshot: it counts what is waiting to be counted."""
        self._settlers.append(hook)

    def snapshot(self) -> Snapshot:
        """This process's counts so far."""
        for settle in self._settlers:
            settle()
        snap = Snapshot()
        for (route, method, status), cell in list(self._http.items()):
            snap.add(HTTP_REQUESTS, (route, method, str(status)), sum(cell[:_BUCKETS]))
            snap.add_buckets(HTTP_DURATION, (route, method), cell[: _SUM + 1])
            snap.add(HTTP_IN, (route, method), cell[_IN])
            snap.add(HTTP_OUT, (route, method), cell[_OUT])
        for counter in self._counters.values():
            for labels, value in counter.values.items():
                snap.add(counter.family, labels, value)
        for source in self._sources:
            source(snap)
        return snap

    def _path(self, pid: int) -> Path | None:
        return self.directory / f"{pid}.json" if self.directory is not None else None

    def publish(self) -> None:
        """Write this process's snapshot for the other workers' scrapes (when it changed)."""
        path = self._path(os.getpid())
        if path is None or not self.enabled:
            return
        text = self.snapshot().to_json()
        if text == self._written:
            return
        temp = path.with_suffix(".tmp")
        temp.write_text(text)
        os.replace(temp, path)
        self._written = text

    def collect(self) -> Snapshot:
        """Every worker's counts summed: this process's now, the others' as last published."""
        total = self.snapshot()
        if self.directory is None:
            return total
        own = self._path(os.getpid())
        for path in sorted(self.directory.glob("*.json")):
            if path == own:
                continue
            with contextlib.suppress(OSError, ValueError):  # replaced or removed while being read
                total.merge(Snapshot.from_json(path.read_text()))
        return total

    async def scrape(self) -> bytes:
        """The Prometheus text of every worker's counts and the deployment's totals."""
        totals = await self._totals() if self._totals is not None else None
        return render(self.collect(), totals)


def render(snap: Snapshot, totals: Totals | None = None) -> bytes:
    """The Prometheus text exposition format (0.0.4) of a snapshot and the deployment's totals."""
    lines: list[str] = []
    gauges = (
        {STORES.name: totals.stores, RECORDS.name: totals.records, STORED_BYTES.name: totals.bytes} if totals else {}
    )
    for family in FAMILIES:
        if family.kind == "gauge":
            if family.name in gauges:
                _header(lines, family)
                lines.append(f"{family.name} {gauges[family.name]}")
        elif family.kind == "histogram":
            _histogram(lines, family, snap.buckets.get(family.name, {}))
        else:
            _header(lines, family)
            for labels, value in sorted(snap.values.get(family.name, {}).items()):
                lines.append(f"{family.name}{_labels(family.labels, labels)} {_number(value)}")
    return ("\n".join(lines) + "\n").encode()


def _header(lines: list[str], family: Family) -> None:
    lines.append(f"# HELP {family.name} {family.help}")
    lines.append(f"# TYPE {family.name} {family.kind}")


def _histogram(lines: list[str], family: Family, rows: dict[Labels, list[float]]) -> None:
    _header(lines, family)
    bounds = [*(repr(float(b)) for b in family.bounds), "+Inf"]
    for labels, counts in sorted(rows.items()):
        running = 0.0
        for bound, n in zip(bounds, counts, strict=False):
            running += n
            le = _labels((*family.labels, "le"), (*labels, bound))
            lines.append(f"{family.name}_bucket{le} {_number(running)}")
        plain = _labels(family.labels, labels)
        lines.append(f"{family.name}_sum{plain} {_number(counts[-1])}")
        lines.append(f"{family.name}_count{plain} {_number(running)}")


def _labels(names: Labels, values: Labels) -> str:
    if not names:
        return ""
    pairs = (f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + ",".join(pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
