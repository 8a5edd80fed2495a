"""`python -m build` gives a wheel and an sdist that each install in a fresh virtual environment
and serve, console included."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import free_port
from kvbox import __version__

ROOT = Path(__file__).resolve().parents[1]


def clean_env() -> dict[str, str]:
    """This environment without kvbox's settings and without a PYTHONPATH that could put a
    source checkout before the installed package."""
    return {k: v for k, v in os.environ.items() if not k.startswith("KVBOX_") and k != "PYTHONPATH"}


def run(*argv: str | Path, cwd: Path | None = None, timeout: float = 600) -> str:
    proc = subprocess.run([str(a) for a in argv], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    assert proc.returncode == 0, f"{' '.join(map(str, argv))}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT)
    return out


def installed(artifact: Path, venv: Path) -> Path:
    """A fresh virtual environment with `artifact` installed; returns its `kvbox` command."""
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", artifact)
    return venv / "bin" / "kvbox"


def serving(kvbox: Path, data_dir: Path) -> Iterator[str]:
    port = free_port()
    env = clean_env()
    log = data_dir.parent / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [kvbox, "serve", "--data-dir", str(data_dir), "--port", str(port)], env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/health/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def check_install(artifact: Path, tmp_path: Path) -> None:
    kvbox = installed(artifact, tmp_path / "venv")
    assert run(kvbox, "--version").strip() == f"kvbox, version {__version__}"
    for url in serving(kvbox, tmp_path / "data"):
        page = httpx.get(f"{url}/sign-in", timeout=10)
        assert page.status_code == 200 and "<form" in page.text
        stylesheet = re.search(r'href="(/static/console.css[^"]*)"', page.text)
        assert stylesheet is not None
        assert httpx.get(url + stylesheet.group(1), timeout=10).status_code == 200


@pytest.mark.slow
def test_the_wheel_installs_and_serves(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("kvbox-*.whl")
    assert wheel.name == f"kvbox-{__version__}-py3-none-any.whl"
    check_install(wheel, tmp_path)


@pytest.mark.slow
def test_the_sdist_installs_and_serves(dist: Path, tmp_path: Path) -> None:
    (sdist,) = dist.glob("kvbox-*.tar.gz")
    check_install(sdist, tmp_path)


def test_the_changelog_has_an_unreleased_section() -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "\n## Unreleased\n" in changelog
    assert f"\n## {__version__} - " in changelog
