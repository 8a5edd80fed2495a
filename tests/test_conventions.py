"""House rules that a reviewer would otherwise have to remember: checked over the source tree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from kvbox.core import errors

SRC = Path(__file__).resolve().parents[1] / "src" / "kvbox"


def _error_slugs() -> set[str]:
    slugs: set[str] = set()
    pending: list[type[errors.KvboxError]] = [errors.KvboxError]
    while pending:
        cls = pending.pop()
        slugs.add(cls.type)
        pending.extend(cls.__subclasses__())
    return slugs


def _string_constants(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


OUTSIDE_CORE = sorted(p for p in SRC.rglob("*.py") if SRC / "core" not in p.parents)


def test_error_slugs_are_known() -> None:
    assert {"record-not-found", "invalid-record-key", "rate-limit-exceeded"} <= _error_slugs()


@pytest.mark.parametrize("path", OUTSIDE_CORE, ids=lambda p: str(p.relative_to(SRC)))
def test_error_slugs_come_from_error_classes(path: Path) -> None:
    """An Apify error `type` is spelled only in its class in `core/errors.py`; elsewhere code
    uses `SomeError.type`, so a slug cannot drift between the API, the CLI and the client."""
    pattern = re.compile(r"(?<![\w-])(" + "|".join(map(re.escape, sorted(_error_slugs()))) + r")(?![\w-])")
    found = [f"line {line}: {text!r}" for line, text in _string_constants(path) if pattern.search(text)]
    assert not found, f"error type slugs spelled out in {path.relative_to(SRC)}: {found}"


def test_record_urls_are_built_in_core() -> None:
    """Every `/records/` URL comes from `kvbox.core.urls`; console page routes are their own paths."""
    offenders = []
    for path in OUTSIDE_CORE:
        for line, text in _string_constants(path):
            if "/v2/key-value-stores" in text and "/records" in text:
                offenders.append(f"{path.relative_to(SRC)}:{line}: {text!r}")
    assert not offenders
