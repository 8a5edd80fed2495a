"""The README's metrics table and the Grafana dashboard name exactly the metrics kvbox exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from kvbox.service.metrics import FAMILIES, Family

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = json.loads((ROOT / "docs" / "grafana-dashboard.json").read_text())
SUFFIXES = ("_bucket", "_sum", "_count")


def exported(name: str) -> str:
    """The family a sample name belongs to (histograms export _bucket, _sum and _count)."""
    for suffix in SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and any(f.name == base and f.kind == "histogram" for f in FAMILIES):
            return base
    return name


def dashboard_metrics() -> set[str]:
    exprs = [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]
    return {exported(name) for expr in exprs for name in re.findall(r"\bkvbox_[a-z_]+", expr)}


def test_the_dashboard_uses_only_exported_metrics_and_shows_every_one() -> None:
    assert dashboard_metrics() == {f.name for f in FAMILIES}


def test_every_dashboard_query_is_scoped_to_the_chosen_nodes() -> None:
    for panel in DASHBOARD["panels"]:
        for target in panel["targets"]:
            for selector in re.findall(r"kvbox_[a-z_]+\{([^}]*)\}", target["expr"]):
                assert 'instance=~"$instance"' in selector, (panel["title"], target["expr"])


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_the_readme_lists_every_metric(family: Family) -> None:
    readme = (ROOT / "README.md").read_text()
    table = readme.split("| metric | kind | labels |", 1)[1].split("\n\n", 1)[0]
    assert f"`{family.name}`" in table
