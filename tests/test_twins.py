"""The blocking twins of the client and the SDK keep in step with the async ones: the same
public members, the same parameters (names, kinds, defaults, annotations) and the same return
types, up to the async spelling (`AsyncIterator`, `...Async`, `Awaitable`).

The deliberate differences are listed here, each with its reason.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

import pytest

from kvbox.client import (
    KvboxClient,
    KvboxClientAsync,
    StoreClient,
    StoreClientAsync,
    StoreCollectionClient,
    StoreCollectionClientAsync,
)
from kvbox.sdk import KeyValueStore, KeyValueStoreSync

TWINS: list[tuple[type, type]] = [
    (KvboxClient, KvboxClientAsync),
    (StoreCollectionClient, StoreCollectionClientAsync),
    (StoreClient, StoreClientAsync),
    (KeyValueStoreSync, KeyValueStore),
]
# Protocol methods whose async names differ (httpx's spelling: `close` / `aclose`).
ASYNC_NAMES = {"close": "aclose", "__enter__": "__aenter__", "__exit__": "__aexit__", "__iter__": "__aiter__"}
DUNDERS = {"__init__", *ASYNC_NAMES, *ASYNC_NAMES.values()}
# (async class, member, parameter) whose annotations differ on purpose.
DIFFERENT_ANNOTATIONS = {
    # The async store also awaits a callback that returns an awaitable; the sync one cannot.
    ("KeyValueStore", "for_each_key", "callback"),
}
_ASYNC_SPELLING = re.compile(r"\b(?:Async|Sync)(?=[A-Z])|(?<=[a-z])(?:Async|Sync)\b")


def members(cls: type) -> dict[str, Any]:
    """Public members and the protocol dunders, as declared (functions, properties, classmethods)."""
    found: dict[str, Any] = {}
    for klass in reversed(cls.__mro__[:-1]):
        found.update({k: v for k, v in vars(klass).items() if not k.startswith("_") or k in DUNDERS})
    return found


def function_of(member: Any) -> Callable[..., Any]:
    """The function behind a method, property or classmethod."""
    if isinstance(member, property):
        assert member.fget is not None
        return member.fget
    if isinstance(member, classmethod | staticmethod):
        return member.__func__
    assert callable(member), member
    function: Callable[..., Any] = member
    return function


def spelled_sync(annotation: Any) -> str:
    """An annotation with the async spelling removed: `AsyncIterator[X]` and `Iterator[X]`,
    `StoreClientAsync` and `StoreClient`, `Awaitable[X]` and `X` compare equal."""
    if annotation is inspect.Parameter.empty:
        return ""
    text = _ASYNC_SPELLING.sub("", str(annotation))
    awaited = re.fullmatch(r"Awaitable\[(.*)\]", text)
    return awaited.group(1) if awaited else text


def pairs() -> list[tuple[type, type, str, str]]:
    """Every (sync class, async class, sync member, async member) pair."""
    return [(sync, asyn, name, ASYNC_NAMES.get(name, name)) for sync, asyn in TWINS for name in sorted(members(sync))]


@pytest.mark.parametrize(("sync", "asyn"), TWINS, ids=lambda cls: cls.__name__)
def test_the_twins_have_the_same_members(sync: type, asyn: type) -> None:
    expected = {ASYNC_NAMES.get(name, name) for name in members(sync)}
    assert sorted(expected) == sorted(members(asyn))


@pytest.mark.parametrize(("sync", "asyn", "name", "async_name"), pairs(), ids=lambda x: getattr(x, "__name__", x))
def test_the_twins_take_the_same_parameters(sync: type, asyn: type, name: str, async_name: str) -> None:
    sync_member, async_member = members(sync)[name], members(asyn)[async_name]
    assert type(sync_member) is type(async_member), "one is a method, the other a property or classmethod"
    if not callable(sync_member) and not isinstance(sync_member, property | classmethod | staticmethod):
        return  # a plain class attribute
    sync_sig = inspect.signature(function_of(sync_member))
    async_sig = inspect.signature(function_of(async_member))
    assert list(sync_sig.parameters) == list(async_sig.parameters)
    for param, twin in zip(sync_sig.parameters.values(), async_sig.parameters.values(), strict=True):
        assert (param.kind, param.default) == (twin.kind, twin.default), param.name
        if (asyn.__name__, async_name, param.name) not in DIFFERENT_ANNOTATIONS:
            assert spelled_sync(param.annotation) == spelled_sync(twin.annotation), param.name
    assert spelled_sync(sync_sig.return_annotation) == spelled_sync(async_sig.return_annotation)


@pytest.mark.parametrize(("sync", "asyn"), TWINS, ids=lambda cls: cls.__name__)
def test_the_sync_twin_never_needs_an_event_loop(sync: type, asyn: type) -> None:
    for name, member in members(sync).items():
        if callable(member) or isinstance(member, property | classmethod | staticmethod):
            fn = inspect.unwrap(function_of(member))
            assert not inspect.iscoroutinefunction(fn) and not inspect.isasyncgenfunction(fn), name
