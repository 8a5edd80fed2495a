"""The README's settings table agrees with the settings declaration, and the two declarations
of the settings (the `SETTINGS` table and the `Settings` dataclass) agree with each other."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from kvbox.cli.main import cli
from kvbox.service.settings import SETTINGS, Setting, Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HEADER = ["option", "environment", "default", "meaning"]
# Environment variables the code reads outside the settings table, documented in the same table.
READ_ELSEWHERE = {"KVBOX_ADMIN_TOKEN"}


@dataclass(frozen=True)
class Row:
    option: str
    env: str
    default: str
    meaning: str


def cells(line: str) -> list[str]:
    """The cells of a Markdown table row, without surrounding spaces and code backticks."""
    inner = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
    return [c[1:-1] if len(c) > 1 and c[0] == c[-1] == "`" else c for c in inner]


def settings_table() -> list[Row]:
    """The rows of the table under the README's `### Settings` heading."""
    section = README.read_text(encoding="utf-8").split("\n### Settings\n", 1)[1].split("\n#", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert cells(lines[0]) == HEADER, lines[0]
    return [Row(*cells(line)) for line in lines[2:]]


ROWS = settings_table()
ROWS_BY_ENV = {row.env: row for row in ROWS}


def serve_option(setting: Setting) -> str:
    """The flag of `kvbox serve` for a setting, or "" when serve has none."""
    serve = cli.commands["serve"]
    flags = [p.opts[0] for p in serve.params if isinstance(p, click.Option) and p.name == setting.name]
    return flags[0] if flags else ""


def test_the_table_has_one_row_per_environment_variable() -> None:
    assert len(ROWS_BY_ENV) == len(ROWS)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_setting_is_documented_with_its_variable_and_option(setting: Setting) -> None:
    assert setting.env in ROWS_BY_ENV, f"{setting.env} is missing from the README's settings table"
    assert ROWS_BY_ENV[setting.env].option == serve_option(setting)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.env)
def test_every_row_is_a_declared_setting(row: Row) -> None:
    declared = {s.env for s in SETTINGS}
    if row.env in READ_ELSEWHERE:
        sources = (p.read_text(encoding="utf-8") for p in (ROOT / "src" / "kvbox").rglob("*.py"))
        assert any(f'"{row.env}"' in text for text in sources), f"no code reads {row.env}"
        assert row.option == ""
    else:
        assert row.env in declared, f"{row.env} is documented but not declared in SETTINGS"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_documented_defaults_are_the_declared_ones(setting: Setting) -> None:
    documented = ROWS_BY_ENV[setting.env].default
    if setting.default is None:
        # No value: blank, or what the server falls back to, as the option's help says.
        assert documented == "" or f"default {documented}" in setting.help, documented
    else:
        assert setting.parse(documented) == setting.parse(setting.default), documented


def test_the_dataclass_declares_the_same_settings_in_the_same_order() -> None:
    names = [f.name for f in dataclasses.fields(Settings) if f.name != "extra"]
    assert names == [s.name for s in SETTINGS]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_the_dataclass_defaults_are_the_tables(setting: Setting) -> None:
    declared = None if setting.default is None else setting.parse(setting.default)
    assert getattr(Settings(), setting.name) == declared
    assert getattr(Settings.from_env({}), setting.name) == declared
