"""Server processes under test: the bare baseline app and `kvbox serve`, on 127.0.0.1 only.

Each server runs in its own session (process group) so stopping it also stops granian's
worker processes; `tree_rss` sums the resident memory of the main process and its workers.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.cpus import server_argv
from bench.wrk import WrkResult

HOST = "127.0.0.1"
BENCH_TOKEN = "bench-token-0123456789abcdef"
PROJECT_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running server process; `stop` ends it and its workers."""

    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except ProcessLookupError:
            pass

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _launch(name: str, argv: list[str], env: dict[str, str], log_dir: Path, port: int, health: str) -> Server:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            server_argv(argv), env=env, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = Server(name=name, url=f"http://{HOST}:{port}", proc=proc, log_path=log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}; see {log_path}")
        try:
            if httpx.get(server.url + health, timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not answer {health} within {START_TIMEOUT_S:.0f} s; see {log_path}")


def start_bare(workers: int, log_dir: Path) -> Server:
    """The baseline app under granian with its defaults, as `kvbox serve` uses them."""
    port = free_port()
    argv = [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", HOST, "--port", str(port),
        "--workers", str(workers), "bench.bare_app:app",
    ]  # fmt: skip
    return _launch(f"bare-w{workers}", argv, dict(os.environ), log_dir, port, "/")


def start_kvbox(
    data_dir: Path, workers: int, log_dir: Path, extra_env: dict[str, str] | None = None, port: int | None = None
) -> Server:
    """`kvbox serve` on `data_dir`, rate limits off; a new data dir gets user `admin` with BENCH_TOKEN."""
    port = port or free_port()
    env = {
        **os.environ,
        "KVBOX_ADMIN_TOKEN": BENCH_TOKEN,
        "KVBOX_PUBLIC_URL": f"http://{HOST}:{port}",
        # The benchmark measures capacity; the per-record limit (200/s) would turn it into 429s.
        "KVBOX_RATE_LIMITS": "false",
        **(extra_env or {}),
    }
    argv = [
        sys.executable, "-m", "kvbox.cli", "serve", "--data-dir", str(data_dir), "--host", HOST,
        "--port", str(port), "--workers", str(workers),
    ]  # fmt: skip
    return _launch(f"kvbox-w{workers}", argv, env, log_dir, port, "/health")


def auth_headers(token: str = BENCH_TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_store(server: Server, name: str) -> str:
    """Get or create the bench user's store `name`; return its id."""
    r = httpx.post(
        f"{server.url}/v2/key-value-stores", params={"name": name}, headers=auth_headers(), json={}, timeout=10
    )
    r.raise_for_status()
    return str(r.json()["data"]["id"])


def tree_pids(pid: int) -> list[int]:
    """`pid` and all its descendants (granian's main process and its workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited while we looked
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_of(pid: int) -> int:
    """Resident set size of one process in bytes (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def pss_of(pid: int) -> int:
    """Proportional set size in bytes: shared pages split between the processes sharing them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss(pid: int, pids: list[int] | None = None) -> int:
    """Summed RSS of a process tree; pass `pids` to skip re-walking the tree."""
    return sum(rss_of(p) for p in (pids if pids is not None else tree_pids(pid)))


def tree_pss(pid: int, pids: list[int] | None = None) -> int:
    """Summed PSS of a process tree: its real footprint, as forked workers share pages."""
    return sum(pss_of(p) for p in (pids if pids is not None else tree_pids(pid)))


TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(server: Server) -> float:
    """User and system CPU time of a server's processes so far."""
    total = 0
    for pid in tree_pids(server.proc.pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def costed(server: Server, run: Callable[[float], WrkResult]) -> Callable[[float], tuple[float, float]]:
    """A run that returns req/s and the server's CPU microseconds per request."""

    def measured(seconds: float) -> tuple[float, float]:
        before = cpu_seconds(server)
        result = run(seconds)
        if result.errors:
            raise RuntimeError(f"{result.errors} failed requests")
        return result.rps, (cpu_seconds(server) - before) / max(1, result.requests) * 1e6

    return measured
