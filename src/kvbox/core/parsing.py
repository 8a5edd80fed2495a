"""Bounded parsing of client-supplied text: integers and JSON documents.

Every number and JSON body a client sends is read through here, so that no input can
exhaust the interpreter's recursion, overflow a database integer or carry text a
database cannot store. Failures are `ValueError`s with a message fit for the caller;
each caller turns them into its own `KvboxError` (the status and type are the caller's).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

# Deep enough for any real document; shallow enough that validating it against a JSON
# schema, storing it and rendering it never comes near the interpreter's recursion limit.
MAX_JSON_DEPTH = 100
# The largest integer a query parameter may carry: every database column and every JSON
# reader (JavaScript's safe integers) holds it exactly.
MAX_INT = 2**53 - 1
_INT_RE = re.compile(r"-?[0-9]+")
# More digits than this is out of range whatever they say (and `int` of it stays cheap).
_MAX_DIGITS = 20
# Text neither PostgreSQL (NUL) nor UTF-8 (lone surrogates) can store.
_UNSTORABLE = re.compile(r"[\x00\ud800-\udfff]")


class JsonLimitError(ValueError):
    """A JSON document that is well-formed but beyond what kvbox accepts."""


def parse_int(text: str, *, minimum: int = -MAX_INT, maximum: int = MAX_INT) -> int:
    """An integer written in ASCII digits (an optional leading `-`), within the bounds.

    Raises `ValueError` for anything else: other Unicode digits (superscripts, Arabic-Indic), underscores,
    spaces, signs other than a leading minus, or a value outside `minimum..maximum`.
    """
    if _INT_RE.fullmatch(text) is None:
        raise ValueError("must be an integer")
    if len(text) > _MAX_DIGITS:
        raise ValueError(f"must be between {minimum} and {maximum}")
    value = int(text)
    if value < minimum:
        raise ValueError(f"must be at least {minimum}")
    if value > maximum:
        raise ValueError(f"must be at most {maximum}")
    return value


def _no_constant(name: str) -> Any:
    raise JsonLimitError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonLimitError(f"the number {text[:40]} is out of range")
    return value


def load_json(data: bytes | str, *, max_depth: int = MAX_JSON_DEPTH, storable: bool = True) -> Any:
    """Parse a JSON document no deeper than `max_depth` containers.

    Rejects what Python's `json` would accept but JSON does not (`NaN`, `Infinity`, numbers
    that overflow a float) and, with `storable`, strings a database cannot hold (NUL,
    lone surrogates). Raises `ValueError` (`UnicodeDecodeError` for bytes that are not UTF-8).
    """
    text = data.decode("utf-8") if isinstance(data, bytes | bytearray) else data
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise JsonLimitError(f"the document is nested deeper than {max_depth} levels") from None
    _check(value, max_depth, storable)
    return value


def _check(value: Any, max_depth: int, storable: bool) -> None:
    """Walk the containers (iteratively: the depth is what is being checked)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            items: Any = node.items()
        elif isinstance(node, list):
            items = enumerate(node)
        else:
            if storable and isinstance(node, str):
                _check_text(node)
            continue
        if depth > max_depth:
            raise JsonLimitError(f"the document is nested deeper than {max_depth} levels")
        for key, child in items:
            if storable and isinstance(key, str):
                _check_text(key)
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
            elif storable and isinstance(child, str):
                _check_text(child)


def _check_text(text: str) -> None:
    if _UNSTORABLE.search(text) is not None:
        raise JsonLimitError("strings may not contain NUL characters or unpaired surrogates")
