"""SDK configuration from environment variables: local or remote mode, storage dir, input key.

Remote mode is chosen by `KVBOX_API_URL` (with `KVBOX_TOKEN`), or by `APIFY_IS_AT_HOME` with
the Apify variables; otherwise the SDK works on the local folder layout.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

APIFY_API_URL = "https://api.apify.com"
DEFAULT_STORAGE_DIR = "./storage"
DEFAULT_INPUT_KEY = "INPUT"

# First variable present wins, in this order.
STORAGE_DIR_VARS = ("KVBOX_STORAGE_DIR", "APIFY_LOCAL_STORAGE_DIR", "CRAWLEE_STORAGE_DIR")
INPUT_KEY_VARS = ("ACTOR_INPUT_KEY", "APIFY_INPUT_KEY", "CRAWLEE_INPUT_KEY")
APIFY_DEFAULT_STORE_VARS = ("ACTOR_DEFAULT_KEY_VALUE_STORE_ID", "APIFY_DEFAULT_KEY_VALUE_STORE_ID")


def _first(env: Mapping[str, str], names: tuple[str, ...], default: str | None = None) -> str | None:
    for name in names:
        value = env.get(name)
        if value:
            return value
    return default


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class Configuration:
    """Where stores live. Hashable: stores opened with equal configurations are shared.

    `remote` selects the mode. `api_url`, `token` and `public_url` may be set in local mode
    too; `force_cloud` uses them then. `default_store_id` names the remote default store;
    without it the remote default store is the caller's store named `default`.
    """

    storage_dir: str = DEFAULT_STORAGE_DIR
    remote: bool = False
    api_url: str | None = None
    token: str | None = None
    public_url: str | None = None
    default_store_id: str | None = None
    input_key: str = DEFAULT_INPUT_KEY
    compression: Literal["gzip", "brotli"] = "gzip"
    max_retries: int = 8
    durable: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Configuration:
        """Read the configuration from `env` (default: `os.environ`)."""
        env = os.environ if env is None else env
        storage_dir = _first(env, STORAGE_DIR_VARS, DEFAULT_STORAGE_DIR) or DEFAULT_STORAGE_DIR
        input_key = _first(env, INPUT_KEY_VARS, DEFAULT_INPUT_KEY) or DEFAULT_INPUT_KEY
        durable = _truthy(env.get("KVBOX_DURABLE"))
        if env.get("KVBOX_API_URL"):
            return cls(
                storage_dir=storage_dir,
                remote=True,
                api_url=env["KVBOX_API_URL"],
                token=env.get("KVBOX_TOKEN") or None,
                public_url=env.get("KVBOX_API_PUBLIC_URL") or None,
                default_store_id=env.get("KVBOX_DEFAULT_KEY_VALUE_STORE_ID") or None,
                input_key=input_key,
                durable=durable,
            )
        at_home = _truthy(env.get("APIFY_IS_AT_HOME"))
        token = env.get("APIFY_TOKEN") or None
        api_url = env.get("APIFY_API_BASE_URL") or (APIFY_API_URL if at_home or token else None)
        return cls(
            storage_dir=storage_dir,
            remote=at_home,
            api_url=api_url,
            token=token,
            public_url=env.get("APIFY_API_PUBLIC_BASE_URL") or None,
            default_store_id=_first(env, APIFY_DEFAULT_STORE_VARS) if at_home else None,
            input_key=input_key,
            # The platform's SDK compresses with brotli; keep that on the platform.
            compression="brotli" if at_home else "gzip",
            durable=durable,
        )

    def for_cloud(self) -> Configuration:
        """This configuration in remote mode (`force_cloud`); needs an API URL and a token."""
        if not self.api_url or not self.token:
            raise RuntimeError(
                "force_cloud needs a server: set KVBOX_API_URL and KVBOX_TOKEN (or APIFY_TOKEN, "
                "with APIFY_API_BASE_URL for a self-hosted server)"
            )
        return self if self.remote else replace(self, remote=True, default_store_id=None)
