"""Core models are immutable values: backends and caches hand the same row to many callers."""

from __future__ import annotations

import dataclasses

import pytest

from kvbox.core import models
from kvbox.core.models import RecordMeta

MODELS = [value for value in vars(models).values() if isinstance(value, type) and dataclasses.is_dataclass(value)]


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_every_model_is_frozen(cls: type) -> None:
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_a_change_is_a_new_value() -> None:
    record = RecordMeta("k", "text/plain", "identity", 1, '"e"', 0, inline=b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.size = 2  # type: ignore[misc]
    changed = dataclasses.replace(record, size=2)
    assert (record.size, changed.size) == (1, 2)
