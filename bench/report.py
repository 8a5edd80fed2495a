"""The results table: each figure with its same-run baseline, ratio, target and verdict."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PASS, MISS, INFO, ERROR = "PASS", "MISS", "info", "ERROR"


@dataclass(frozen=True)
class Row:
    section: str
    metric: str
    value: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    status: str = INFO


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return sum(values) - idle, sum(values)


def _own_cpu_s() -> float:
    """CPU seconds of this process and its reaped children (servers, wrk)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


@dataclass
class Report:
    """Collects rows while the run goes on; also watches how busy the machine is besides us."""

    mode: str
    started: float = field(default_factory=time.time)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    _cpu_start: tuple[int, int] = field(default_factory=_cpu_jiffies)
    _own_start: float = field(default_factory=_own_cpu_s)

    def others_cpu_share(self) -> float:
        """Share of the machine's CPU time that other processes used since the run began."""
        busy0, total0 = self._cpu_start
        busy1, total1 = _cpu_jiffies()
        tick = os.sysconf("SC_CLK_TCK")
        own = _own_cpu_s() - self._own_start
        others = max(0.0, (busy1 - busy0) / tick - own)
        return others / ((total1 - total0) / tick) if total1 > total0 else 0.0

    def info(self, section: str, metric: str, value: str, baseline: str = "—", ratio: str = "—") -> None:
        self._add(Row(section, metric, value, baseline, ratio))

    def check(
        self, section: str, metric: str, value: str, *, baseline: str, ratio: str, target: str, passed: bool,
        valid: bool = True,
    ) -> None:  # fmt: skip
        """A figure with a target; `valid=False` (failed requests, wrong data) makes it ERROR, never PASS."""
        status = (PASS if passed else MISS) if valid else ERROR
        self._add(Row(section, metric, value, baseline, ratio, target, status))

    def error(self, section: str, message: str) -> None:
        self._add(Row(section, "failed", message.replace("|", "/").replace("\n", " ")[:300], status=ERROR))

    def note(self, text: str) -> None:
        self.notes.append(text)

    def _add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {row.status:5} {row.section} | {row.metric}: {row.value}  (baseline {row.baseline}, "
              f"ratio {row.ratio}, target {row.target})", flush=True)  # fmt: skip

    @property
    def failed(self) -> bool:
        return any(r.status == ERROR for r in self.rows)

    def markdown(self) -> str:
        elapsed = time.time() - self.started
        others = self.others_cpu_share()
        lines = [
            f"# kvbox benchmark ({self.mode} run)",
            "",
            f"- date: {time.strftime('%Y-%m-%d %H:%M %Z', time.localtime(self.started))}, took {elapsed:.0f} s",
            f"- machine: {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}",
            f"- other processes used {100 * others:.0f}% of the machine's CPU during the run"
            f"{' (the machine was NOT idle: figures are low and noisy)' if others > 0.1 else ''}",
            f"- software: {_versions()}; kvbox commit {_commit()}",
            "",
            "| section | metric | value | baseline (same run) | ratio | target | result |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.section} | {r.metric} | {r.value} | {r.baseline} | {r.ratio} | {r.target} | {r.status} |"
            )
        passed = sum(r.status == PASS for r in self.rows)
        missed = sum(r.status == MISS for r in self.rows)
        errors = sum(r.status == ERROR for r in self.rows)
        lines += ["", f"**{passed} PASS, {missed} MISS, {errors} ERROR**", ""]
        if self.notes:
            lines += ["## How each figure was measured", ""]
            lines += [f"- {n}" for n in self.notes]
            lines.append("")
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.markdown())


def _versions() -> str:
    parts = []
    for name in ("granian", "httpx"):
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} ?")
    wrk = shutil.which("wrk")
    if wrk:
        out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10, check=False)
        first = (out.stdout or out.stderr).splitlines()[:1]
        parts.append(first[0].split(" [")[0] if first else "wrk")
    parts.append(f"sqlite {_sqlite_version()}")
    return ", ".join(parts)


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=root, capture_output=True, text=True, timeout=10,
            check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' + uncommitted changes in src/' if dirty else ''}"


def fmt_ratio(value: float, baseline: float) -> str:
    return f"{value / baseline:.2f}" if baseline else "—"
