"""Click options generated from the settings table, so the CLI, env vars and docs agree."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from kvbox.service.settings import SETTINGS_BY_NAME, Settings


def setting_option(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    s = SETTINGS_BY_NAME[name]
    flag = "--" + name.replace("_", "-")
    default_text = s.default if s.default is not None else "none"
    return click.option(
        flag,
        name,
        default=None,
        metavar=s.metavar,
        help=f"{s.help} [env {s.env}; default {default_text}]",
    )


def with_settings(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        for name in reversed(names):
            fn = setting_option(name)(fn)
        return fn

    return decorate


def settings_from(options: dict[str, Any]) -> Settings:
    try:
        return Settings.from_env(**{k: v for k, v in options.items() if v is not None})
    except (TypeError, ValueError) as err:
        raise click.UsageError(str(err)) from err


BACKEND_SETTINGS = ("data_dir", "backend", "durable", "metadata_url", "blob_url", "s3_endpoint", "metadata_pool_size")
