"""Mode selection and settings from environment variables."""

from __future__ import annotations

import pytest

from kvbox.sdk import Configuration
from kvbox.sdk.config import APIFY_API_URL


def test_local_by_default() -> None:
    config = Configuration.from_env({})
    assert not config.remote and config.storage_dir == "./storage" and config.input_key == "INPUT"
    assert config.api_url is None


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CRAWLEE_STORAGE_DIR": "c"}, "c"),
        ({"CRAWLEE_STORAGE_DIR": "c", "APIFY_LOCAL_STORAGE_DIR": "a"}, "a"),
        ({"CRAWLEE_STORAGE_DIR": "c", "APIFY_LOCAL_STORAGE_DIR": "a", "KVBOX_STORAGE_DIR": "k"}, "k"),
        ({"KVBOX_STORAGE_DIR": ""}, "./storage"),
    ],
)
def test_storage_dir_precedence(env: dict[str, str], expected: str) -> None:
    assert Configuration.from_env(env).storage_dir == expected


def test_input_key_precedence() -> None:
    assert Configuration.from_env({"CRAWLEE_INPUT_KEY": "C"}).input_key == "C"
    assert Configuration.from_env({"CRAWLEE_INPUT_KEY": "C", "ACTOR_INPUT_KEY": "INPUT-METAMORPH-1"}).input_key == (
        "INPUT-METAMORPH-1"
    )


def test_kvbox_remote_mode() -> None:
    config = Configuration.from_env(
        {"KVBOX_API_URL": "http://kv:8790", "KVBOX_TOKEN": "tok", "APIFY_DEFAULT_KEY_VALUE_STORE_ID": "ignored"}
    )
    assert config.remote and config.api_url == "http://kv:8790" and config.token == "tok"
    assert config.default_store_id is None and config.compression == "gzip"


def test_apify_at_home() -> None:
    env = {
        "APIFY_IS_AT_HOME": "1",
        "APIFY_TOKEN": "tok",
        "APIFY_API_BASE_URL": "http://kv:8790",
        "APIFY_API_PUBLIC_BASE_URL": "https://kv.example.com",
        "APIFY_DEFAULT_KEY_VALUE_STORE_ID": "WkzbQMuFYuamGv3YF",
    }
    config = Configuration.from_env(env)
    assert config.remote and config.api_url == "http://kv:8790" and config.public_url == "https://kv.example.com"
    assert config.default_store_id == "WkzbQMuFYuamGv3YF" and config.compression == "brotli"
    assert Configuration.from_env({"APIFY_IS_AT_HOME": "true", "APIFY_TOKEN": "t"}).api_url == APIFY_API_URL


def test_apify_variables_without_at_home_stay_local() -> None:
    config = Configuration.from_env({"APIFY_TOKEN": "tok", "APIFY_DEFAULT_KEY_VALUE_STORE_ID": "x"})
    assert not config.remote and config.default_store_id is None
    cloud = config.for_cloud()
    assert cloud.remote and cloud.api_url == APIFY_API_URL and cloud.token == "tok"


def test_force_cloud_without_a_token() -> None:
    with pytest.raises(RuntimeError):
        Configuration.from_env({}).for_cloud()
