"""Hostile values on the command line get a one-line error and exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--unnamed-retention", "9" * 400, "duration too long"),
        ("--unnamed-retention", "5 fortnights", "not a duration"),
        ("--port", "99999999", "not a port"),
        ("--port", "-1", "not a port"),
        ("--max-record-size", "9" * 5000, "not a size"),
        ("--workers", "\u00b2", "invalid literal for int()"),
    ],
)
def test_serve_refuses_hostile_settings_plainly(tmp_path: Path, option: str, value: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "kvbox.cli", "serve", "--data-dir", str(tmp_path / "data"), option, value],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert message in done.stderr, done.stderr
    assert not (tmp_path / "data").exists()
