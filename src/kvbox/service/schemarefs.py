"""References inside a collection's JSON schema: local, resolvable, and never a loop.

A `$ref` that points outside the schema would make validation fetch (or fail to find) a
document; one that leads back to itself without descending into the instance (`{"$ref":
"#"}`, or through `allOf`, `not`, `if`...) would make validation recurse forever. Both are
refused when the schema is set, so that validating a record always ends with an answer.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

# Draft 7 keywords whose value is one schema, a list of schemas, or a map of them.
_ONE = ("additionalItems", "additionalProperties", "contains", "not", "if", "then", "else", "propertyNames")
_LIST = ("allOf", "anyOf", "oneOf")
_MAP = ("properties", "patternProperties", "definitions", "dependencies")
# Keywords that apply a schema to the same instance (not to a part of it): a cycle through
# these alone never ends.
_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_LIST = ("allOf", "anyOf", "oneOf")


class SchemaRefError(ValueError):
    """A `$ref` kvbox cannot follow, or a loop of them; the message says which."""


def check_refs(schema: dict[str, Any]) -> None:
    """Raise `SchemaRefError` unless every `$ref` is a resolvable `#...` pointer into the
    schema and no chain of in-place references leads back to where it started."""
    nodes = dict(_subschemas(schema, ""))
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for pointer in nodes:
        _visit(schema, pointer, state)


def _subschemas(node: Any, pointer: str) -> Any:
    """Every schema object in the document, with its JSON pointer (iteratively)."""
    stack = [(node, pointer)]
    while stack:
        current, where = stack.pop()
        if not isinstance(current, dict):
            continue
        yield where, current
        stack.extend(_children(current, where))


def _children(node: dict[str, Any], where: str) -> list[tuple[Any, str]]:
    out: list[tuple[Any, str]] = [(node[k], f"{where}/{k}") for k in _ONE if k in node]
    items = node.get("items")
    if isinstance(items, dict):
        out.append((items, f"{where}/items"))
    elif isinstance(items, list):
        out.extend((s, f"{where}/items/{i}") for i, s in enumerate(items))
    for k in _LIST:
        if isinstance(node.get(k), list):
            out.extend((s, f"{where}/{k}/{i}") for i, s in enumerate(node[k]))
    for k in _MAP:
        if isinstance(node.get(k), dict):
            out.extend((s, f"{where}/{k}/{_escape(name)}") for name, s in node[k].items())
    return out


def _in_place(node: dict[str, Any], where: str) -> list[str]:
    """Pointers of the schemas applied to the same instance as `node`."""
    out = [f"{where}/{k}" for k in _IN_PLACE_ONE if isinstance(node.get(k), dict)]
    for k in _IN_PLACE_LIST:
        if isinstance(node.get(k), list):
            out.extend(f"{where}/{k}/{i}" for i, s in enumerate(node[k]) if isinstance(s, dict))
    deps = node.get("dependencies")
    if isinstance(deps, dict):
        out.extend(f"{where}/dependencies/{_escape(n)}" for n, s in deps.items() if isinstance(s, dict))
    ref = node.get("$ref")
    if ref is not None:
        out.append(_ref_pointer(ref))
    return out


def _visit(root: dict[str, Any], start: str, state: dict[str, int]) -> None:
    """Depth-first over in-place edges, with an explicit stack; a grey node seen again is a loop."""
    stack: list[tuple[str, list[str]]] = []
    if state.get(start):
        return
    state[start] = 1
    stack.append((start, _in_place(_resolve(root, start), start)))
    while stack:
        where, pending = stack[-1]
        if not pending:
            state[where] = 2
            stack.pop()
            continue
        nxt = pending.pop()
        seen = state.get(nxt)
        if seen == 1:
            raise SchemaRefError(f"the reference at {where or '#'} leads back to itself without descending")
        if seen is None:
            state[nxt] = 1
            target = _resolve(root, nxt)
            stack.append((nxt, _in_place(target, nxt) if isinstance(target, dict) else []))


def _ref_pointer(ref: Any) -> str:
    if not isinstance(ref, str) or not ref.startswith("#") or (len(ref) > 1 and ref[1] != "/"):
        raise SchemaRefError(f"$ref {ref!r} is not supported: use a local reference such as '#/definitions/name'")
    return unquote(ref[1:])


def _resolve(root: dict[str, Any], pointer: str) -> Any:
    node: Any = root
    for raw in pointer.split("/")[1:]:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isascii() and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SchemaRefError(f"$ref '#{pointer}' points to nothing in the schema")
    if not isinstance(node, dict | bool):
        raise SchemaRefError(f"$ref '#{pointer}' does not point to a schema")
    return node


def _escape(name: str) -> str:
    return name.replace("~", "~0").replace("/", "~1")
