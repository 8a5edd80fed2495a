"""Core models are immutable values (backends and caches hand the same row to many callers),
built by `fast_init` exactly as `dataclass` would build them."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import pytest

from kvbox.core import models
from kvbox.core.frozen import fast_init
from kvbox.core.models import RecordMeta, Store, StoreStats

MODELS = [value for value in vars(models).values() if isinstance(value, type) and dataclasses.is_dataclass(value)]


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_every_model_is_frozen(cls: type) -> None:
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]


@pytest.mark.parametrize("cls", MODELS, ids=lambda cls: cls.__name__)
def test_constructor_takes_what_the_dataclass_one_takes(cls: type) -> None:
    def parameter(f: dataclasses.Field[Any]) -> str:
        if f.default is not dataclasses.MISSING:
            return f"{f.name}={f.default!r}"
        return f"{f.name}=<factory>" if f.default_factory is not dataclasses.MISSING else f.name

    assert str(inspect.signature(cls)) == f"({', '.join(map(parameter, dataclasses.fields(cls)))})"


def test_arguments_defaults_and_factories() -> None:
    record = RecordMeta("k", "text/plain", "identity", 1, '"e"', 7)
    assert record == RecordMeta(key="k", content_type="text/plain", encoding="identity", size=1, etag='"e"',
                                modified_at=7, inline=None, blob_id=None)  # fmt: skip
    a, b = Store("a", None, "u", 0, 0, 0, "secret"), Store("b", None, "u", 0, 0, 0, "secret")
    assert a.stats == StoreStats() and a.stats is not b.stats  # a factory runs per instance
    given = StoreStats(read_count=3)
    assert Store("c", None, "u", 0, 0, 0, "secret", stats=given).stats is given
    with pytest.raises(TypeError):
        RecordMeta("k", "text/plain")  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        RecordMeta("k", "text/plain", "identity", 1, '"e"', 7, colour="blue")  # type: ignore[call-arg]


def test_a_change_is_a_new_value() -> None:
    record = RecordMeta("k", "text/plain", "identity", 1, '"e"', 0, inline=b"x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.size = 2  # type: ignore[misc]
    changed = dataclasses.replace(record, size=2)
    assert (record.size, changed.size) == (1, 2)


def test_fast_init_refuses_a_class_it_cannot_keep_frozen() -> None:
    @dataclasses.dataclass(slots=True)
    class Mutable:
        x: int

    with pytest.raises(TypeError, match="not a frozen, slotted dataclass"):
        fast_init(Mutable)
