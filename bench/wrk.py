"""Load generation with wrk: Lua scripts for GET and rotating-key PUT, results parsed as JSON.

Each script's `done` hook prints one `BENCH_JSON {...}` line with the request count,
errors and latency percentiles (wrk records latency in microseconds).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.cpus import load_argv

INSTALL_HINT = (
    "wrk is not installed. Install it with `apt-get install -y wrk` (Debian package 'wrk'), "
    "or run `sh bench/ensure_tools.sh`, which `make bench` calls."
)
THREADS = 2
MARKER = "BENCH_JSON "

_DONE = r"""
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""

_GET = """
wrk.method = "GET"
wrk.headers["Authorization"] = "Bearer {token}"
"""

# Every thread pre-formats one request per key and cycles through them, so the Lua side
# costs one table lookup per request.
_PUT = """
local body = string.rep("x", {size})
local reqs = {{}}
local i = 0
function init(args)
  local headers = {{["Authorization"] = "Bearer {token}", ["Content-Type"] = "application/octet-stream"{extra}}}
  for k = 1, {keys} do
    reqs[k] = wrk.format("PUT", string.format("{path_prefix}%05d", k), headers, body)
  end
  i = math.random({keys})
end
function request()
  i = i % {keys} + 1
  return reqs[i]
end
"""


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(INSTALL_HINT)
    return path


def get_script(token: str | None) -> str:
    return (_GET.format(token=token) if token else 'wrk.method = "GET"\n') + _DONE


def put_script(
    token: str, path_prefix: str, *, size: int = 1024, keys: int = 1000, headers: dict[str, str] | None = None
) -> str:
    """PUTs cycling through `keys` keys under `path_prefix`, with `headers` added to each."""
    extra = "".join(f', ["{name}"] = {_lua_string(value)}' for name, value in (headers or {}).items())
    return _PUT.format(token=token, path_prefix=path_prefix, size=size, keys=keys, extra=extra) + _DONE


# A random key of `keys` per request (`{path_prefix}` + the zero-padded index, as
# bench/listing.py's `key_at` spells keys), for reads and writes spread over a big store.
_RANDOM = """
local body = {body}
local headers = {{["Authorization"] = "Bearer {token}"{content_type}}}
function init(args)
  math.randomseed(os.time() + tonumber(tostring({{}}):sub(8), 16))
end
function request()
  return wrk.format("{method}", string.format("{path_prefix}%08d", math.random(0, {keys} - 1)), headers, body)
end
"""


def random_key_script(token: str, path_prefix: str, *, keys: int, method: str = "GET", size: int = 1024) -> str:
    """GETs (or PUTs of `size` bytes) of a random key `{path_prefix}{i:08d}`, i < `keys`, each."""
    body = f'string.rep("x", {size})' if method == "PUT" else "nil"
    content_type = ', ["Content-Type"] = "application/octet-stream"' if method == "PUT" else ""
    script = _RANDOM.format(
        body=body, token=token, content_type=content_type, method=method, path_prefix=path_prefix, keys=keys
    )
    return script + _DONE


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_wrk(url: str, script: str, *, seconds: float, connections: int) -> WrkResult:
    """One bounded wrk run against `url` (a loopback address)."""
    wrk = require_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
        script_path = Path(f.name)
    try:
        argv = [
            wrk, f"-t{THREADS}", f"-c{max(connections, THREADS)}", f"-d{max(1, round(seconds))}s",
            "--timeout", "5s", "-s", str(script_path), url,
        ]  # fmt: skip
        out = subprocess.run(load_argv(argv), capture_output=True, text=True, timeout=seconds + 60, check=False)
    finally:
        script_path.unlink(missing_ok=True)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith(MARKER)), None)
    if out.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr.strip() or out.stdout.strip()}")
    data = json.loads(line[len(MARKER) :])
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
    )
