"""Real backing services for the scale-out backend: PostgreSQL and an S3 server on loopback.

PostgreSQL runs from Debian's binaries (`/usr/lib/postgresql/*/bin`, the `postgresql`
package) in a temporary directory; as root it runs as the `postgres` user (created by that
package) or `nobody`, because initdb refuses root. S3 is moto's server (`moto[server]`) in
a process of its own. Both listen on 127.0.0.1 only. When either is missing, starting it
raises: the tests that need it fail, they never skip.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, TypedDict
from urllib.parse import quote

import httpx

PG_BIN_ENV = "KVBOX_TEST_PG_BIN"
PG_USER = "kvbox"
AWS_TEST_ENV = {
    "AWS_ACCESS_KEY_ID": "kvbox-test",
    "AWS_SECRET_ACCESS_KEY": "kvbox-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
# Settings for a throwaway cluster: nothing here needs to survive a power cut.
FAST_PG = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_pg_bin() -> Path:
    """The directory holding initdb and postgres, or an error saying how to install them."""
    explicit = os.environ.get(PG_BIN_ENV)
    candidates = [explicit] if explicit else sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError(
        "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin and $KVBOX_TEST_PG_BIN). "
        "Install Debian's package: apt-get install -y postgresql (`make test` does this)."
    )


def _version(path: str) -> float:
    with contextlib.suppress(ValueError):
        return float(Path(path).parent.name)
    return 0.0


def _run_as() -> pwd.struct_passwd | None:
    """The OS user for the server when we are root (initdb refuses root), else None."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root, but neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


class _RunAs(TypedDict, total=False):
    """`subprocess` arguments that run the server as another OS user."""

    user: int
    group: int


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1:<free port>, removed by `stop`."""

    def __init__(self, *, settings: dict[str, str] | None = None) -> None:
        self.bin = find_pg_bin()
        self.port = free_port()
        self.settings = {**FAST_PG, "max_connections": "400", **(settings or {})}
        # Not under pytest's tmp dir: that is private to root, and the server may run as another user.
        self.root = Path(tempfile.mkdtemp(prefix="kvbox-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._user = _run_as()
        self._proc: subprocess.Popen[bytes] | None = None
        self._schemas = itertools.count()

    def _as_user(self) -> _RunAs:
        return {} if self._user is None else {"user": self._user.pw_uid, "group": self._user.pw_gid}

    def start(self) -> PostgresServer:
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)
        subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"],
            check=True, capture_output=True, cwd=self.root, **self._as_user(),
        )  # fmt: skip
        return self.resume()

    def halt(self) -> None:
        """Stop the server (a fast shutdown: clients are disconnected), keeping its data."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)
            self._proc.wait(timeout=30)

    def resume(self) -> PostgresServer:
        """Start the server on its data directory and port (again, after `halt`)."""
        options = [f"-c{k}={v}" for k, v in self.settings.items()]
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
                 "-k", str(self.root), *options],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
                **self._as_user(),
            )  # fmt: skip
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self._proc.returncode}:\n{self.log.read_text()[-2000:]}")
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def url(self, database: str = "postgres", *, schema: str | None = None) -> str:
        url = f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"
        return url + (f"?options={quote(f'-csearch_path={schema}')}" if schema else "")

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, prefix: str = "kvbox") -> str:
        """A new empty database; returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_schema(self, database: str = "postgres") -> str:
        """A new empty schema; returns a URL whose connections work in it."""
        name = f"t{os.getpid()}_{next(self._schemas)}"
        self.execute(f'CREATE SCHEMA "{name}"', database)
        return self.url(database, schema=name)

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


class MotoServer:
    """moto's S3 server in its own process on 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        if importlib.util.find_spec("moto") is None:
            raise RuntimeError("moto is not installed: pip install 'moto[server]' (it is in kvbox's dev extra)")
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="kvbox-moto-", suffix=".log")[1])
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoServer:
        with open(self.log, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, **AWS_TEST_ENV},
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {self._proc.returncode}:\n{self.log.read_text()[-2000:]}")
            try:
                httpx.get(f"{self.endpoint}/moto-api/", timeout=1)
                return self
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_bucket(self, prefix: str = "kvbox") -> str:
        """A new empty bucket; returns its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        response = httpx.put(f"{self.endpoint}/{name}", timeout=10)  # moto takes unsigned requests
        response.raise_for_status()
        return name

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self.log.unlink(missing_ok=True)


def scale_out_env(metadata_url: str, blob_url: str, endpoint: str) -> dict[str, str]:
    """The KVBOX_* and AWS_* variables that point `kvbox` at PostgreSQL + S3."""
    return {
        **AWS_TEST_ENV,
        "KVBOX_METADATA_URL": metadata_url,
        "KVBOX_BLOB_URL": blob_url,
        "KVBOX_S3_ENDPOINT": endpoint,
    }


class ScaleOut:
    """One PostgreSQL cluster and one S3 server, handing out fresh namespaces on both."""

    def __init__(self, pg: PostgresServer, s3: MotoServer) -> None:
        self.pg = pg
        self.s3 = s3
        self.bucket = s3.create_bucket()

    def blob_url(self) -> str:
        return f"s3://{self.bucket}/{uuid.uuid4().hex[:12]}"

    def settings(self) -> dict[str, str]:
        """Settings fields for a fresh, empty (not yet migrated) schema and key prefix."""
        return {"metadata_url": self.pg.create_schema(), "blob_url": self.blob_url(), "s3_endpoint": self.s3.endpoint}

    def server_env(self) -> dict[str, str]:
        """Environment for `kvbox` processes on a fresh database and key prefix."""
        return scale_out_env(self.pg.create_database(), self.blob_url(), self.s3.endpoint)

    @classmethod
    def start(cls) -> ScaleOut:
        pg = PostgresServer().start()
        try:
            s3 = MotoServer().start()
        except BaseException:
            pg.stop()
            raise
        return cls(pg, s3)

    def stop(self) -> None:
        try:
            self.s3.stop()
        finally:
            self.pg.stop()


# `kvbox` commands find a server's storage through its data directory. A scale-out server
# keeps nothing there, so the environment that points commands at its database and bucket
# is kept here, by data directory, for the helpers that run `kvbox ... --data-dir`.
COMMAND_ENV: dict[Path, dict[str, str]] = {}


def kvbox_migrate(env: dict[str, str]) -> str:
    """Run `kvbox migrate` as a process on the storage named by `env`; returns its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "kvbox.cli", "migrate"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"kvbox migrate failed:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def bucket_of(env: dict[str, str]) -> tuple[Any, str, str]:
    """A boto3 client (not kvbox's) for the blob URL in `env`, its bucket and its key prefix."""
    import boto3

    bucket, _, prefix = env["KVBOX_BLOB_URL"].removeprefix("s3://").partition("/")
    return boto3.client("s3", endpoint_url=env["KVBOX_S3_ENDPOINT"], **_boto_credentials()), bucket, prefix


def stored_objects(env: dict[str, str]) -> dict[str, int]:
    """Key -> size of every object under the blob URL in `env` (read with boto3, not kvbox)."""
    s3, bucket, prefix = bucket_of(env)
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.strip("/") + "/")
    return {item["Key"]: item["Size"] for page in pages for item in page.get("Contents", [])}


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": AWS_TEST_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": AWS_TEST_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": AWS_TEST_ENV["AWS_DEFAULT_REGION"],
    }
