"""`kvbox backup`, `kvbox restore` and `kvbox verify` as real commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from backing_services import AWS_TEST_ENV, ScaleOut, bucket_of, kvbox_migrate
from kvbox.service.verify import MISSING

BIG = os.urandom(100 * 1024)  # above the default 64 KiB inline threshold: a record file


def kvbox(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KVBOX_")}
    return subprocess.run(
        [sys.executable, "-m", "kvbox.cli", *args], env={**clean, **AWS_TEST_ENV, **(env or {})},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def ok(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = kvbox(*args, env=env)
    assert proc.returncode == 0, f"kvbox {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def fill(tmp_path: Path, env: dict[str, str]) -> None:
    """User alice with store `docs`: a small record and a record file."""
    (tmp_path / "big.bin").write_bytes(BIG)
    (tmp_path / "small.txt").write_text("hello")
    ok("users", "create", "alice", env=env)
    ok("stores", "create", "docs", env=env)
    ok("put", "docs", "big", str(tmp_path / "big.bin"), env=env)
    ok("put", "docs", "small", str(tmp_path / "small.txt"), env=env)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    fill(tmp_path, {"KVBOX_DATA_DIR": str(path)})
    return path


def verify_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    proc = kvbox("verify", "--json", *args, env=env)
    return proc.returncode, json.loads(proc.stdout)


def test_backup_restore_and_verify_agree(data_dir: Path, tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    out = ok("backup", str(backup), "--data-dir", str(data_dir)).stdout
    assert "1 stores, 2 records and 1 record files" in out
    manifest = json.loads((backup / "kvbox-backup.json").read_text())
    assert (manifest["records"], manifest["files"], manifest["file_bytes"], manifest["missing"]) == (2, 1, len(BIG), [])
    assert not (data_dir / "blobs" / "backup.lock").exists()
    restored = tmp_path / "restored"
    out = ok("restore", str(backup), "--data-dir", str(restored)).stdout
    assert "No damage found." in out
    sums = [verify_json("--data-dir", str(d))[1]["sha256"] for d in (data_dir, backup, restored)]
    assert len(set(sums)) == 1
    got = ok("get", "docs", "big", "-o", str(tmp_path / "out.bin"), env={"KVBOX_DATA_DIR": str(restored)})
    assert (tmp_path / "out.bin").read_bytes() == BIG, got.stderr


def test_backup_refuses_a_destination_that_holds_something(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    proc = kvbox("backup", str(tmp_path / "full"), "--data-dir", str(data_dir))
    assert proc.returncode == 1
    assert "not an empty directory" in proc.stderr
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_backup_of_the_scale_out_backend_points_to_its_own_tools(tmp_path: Path) -> None:
    proc = kvbox("backup", str(tmp_path / "b"), "--metadata-url", "postgresql://kv@db/kv", "--blob-url", "s3://b/k")
    assert proc.returncode == 2
    assert "point-in-time recovery" in proc.stderr


def test_restore_refuses_incomplete_backups_and_used_directories(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    proc = kvbox("restore", str(tmp_path / "half"), "--data-dir", str(tmp_path / "new"))
    assert proc.returncode == 1 and "not a complete kvbox backup" in proc.stderr
    ok("backup", str(tmp_path / "backup"), "--data-dir", str(data_dir))
    proc = kvbox("restore", str(tmp_path / "backup"), "--data-dir", str(data_dir))
    assert proc.returncode == 1 and "not an empty directory" in proc.stderr


def test_verify_exits_non_zero_on_a_missing_record_file(data_dir: Path) -> None:
    (blob,) = [p for p in (data_dir / "blobs").glob("*/*/*") if p.parent.parent.name != "tmp"]
    blob.unlink()
    code, report = verify_json("--data-dir", str(data_dir))
    assert code == 1
    assert report["ok"] is False
    assert [(d["problem"], d["key"]) for d in report["damage"]] == [(MISSING, "big")]
    proc = kvbox("verify", "--data-dir", str(data_dir))
    assert proc.returncode == 1
    assert f"DAMAGE {MISSING}" in proc.stdout and "1 problems found" in proc.stderr


@pytest.mark.slow
def test_verify_on_the_scale_out_backend(scale_out: ScaleOut, tmp_path: Path) -> None:
    (tmp_path / "node").mkdir()  # the data commands look for a data directory even on the scale-out backend
    env = {**scale_out.server_env(), "KVBOX_DATA_DIR": str(tmp_path / "node")}
    kvbox_migrate(env)
    fill(tmp_path, env)
    code, report = verify_json(env=env)
    assert (code, report["ok"], report["records"], report["blobs"]) == (0, True, 2, 1)
    s3, bucket, prefix = bucket_of(env)
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    s3.put_object(Bucket=bucket, Key=key[: -len("x")] + ("0" if key[-1] != "0" else "1"), Body=b"stray")
    s3.delete_object(Bucket=bucket, Key=key)
    code, report = verify_json("--orphan-min-age", "0s", env=env)
    assert code == 1
    assert [(d["problem"], d["key"]) for d in report["damage"]] == [(MISSING, "big")]
    assert len(report["orphans"]) == 1
