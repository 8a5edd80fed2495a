"""Key-value store schemas: validating a schema, matching keys to collections, checking writes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kvbox.core.content import charset, is_json_type, media_type
from kvbox.core.errors import InvalidCollectionError, SchemaValidationError, StoreSchemaInvalidError


@dataclass(frozen=True, slots=True)
class Collection:
    id: str
    key: str | None
    key_prefix: str | None
    content_types: tuple[str, ...] | None
    json_schema: dict[str, Any] | None

    def matches(self, key: str) -> bool:
        if self.key is not None:
            return key == self.key
        return self.key_prefix is not None and key.startswith(self.key_prefix)

    def allows(self, content_type: str) -> bool:
        if not self.content_types:
            return True
        mt = media_type(content_type)
        for allowed in self.content_types:
            a = media_type(allowed)
            if a == mt or a in ("*/*", "*") or (a.endswith("/*") and mt.startswith(a[:-1])):
                return True
        return False


def validate_schema(schema: Any) -> dict[str, Any]:
    """Check a store schema object; return it unchanged or raise `StoreSchemaInvalidError`."""
    if not isinstance(schema, dict):
        raise StoreSchemaInvalidError("The key-value store schema must be a JSON object.")
    version = schema.get("actorKeyValueStoreSchemaVersion")
    if version != 1:
        raise StoreSchemaInvalidError("The schema must have actorKeyValueStoreSchemaVersion 1.")
    collections = schema.get("collections", {})
    if not isinstance(collections, dict):
        raise StoreSchemaInvalidError("The schema's collections must be an object.")
    for cid, spec in collections.items():
        _parse_collection(cid, spec)
    return schema


def _parse_collection(cid: str, spec: Any) -> Collection:
    if not isinstance(spec, dict):
        raise StoreSchemaInvalidError(f"Collection {cid!r} must be an object.")
    key, prefix = spec.get("key"), spec.get("keyPrefix")
    if (key is None) == (prefix is None):
        raise StoreSchemaInvalidError(f"Collection {cid!r} must have exactly one of key and keyPrefix.")
    if not isinstance(key if key is not None else prefix, str):
        raise StoreSchemaInvalidError(f"Collection {cid!r}: key and keyPrefix must be strings.")
    types = spec.get("contentTypes")
    if types is not None and (not isinstance(types, list) or not all(isinstance(t, str) for t in types)):
        raise StoreSchemaInvalidError(f"Collection {cid!r}: contentTypes must be a list of strings.")
    js = spec.get("jsonSchema")
    if js is not None:
        if not isinstance(js, dict):
            raise StoreSchemaInvalidError(f"Collection {cid!r}: jsonSchema must be an object.")
        import jsonschema  # imported on first use: it costs every server process ~11 MiB

        try:
            jsonschema.Draft7Validator.check_schema(js)
        except jsonschema.SchemaError as err:
            raise StoreSchemaInvalidError(f"Collection {cid!r}: jsonSchema is invalid: {err.message}") from err
    return Collection(cid, key, prefix, tuple(types) if types is not None else None, js)


def collections_of(schema: dict[str, Any] | None) -> list[Collection]:
    if not schema:
        return []
    return [_parse_collection(cid, spec) for cid, spec in (schema.get("collections") or {}).items()]


def find_collection(schema: dict[str, Any] | None, collection_id: str) -> Collection:
    for c in collections_of(schema):
        if c.id == collection_id:
            return c
    if not schema:
        raise InvalidCollectionError(f"Collection {collection_id!r} does not exist: the key-value store has no schema.")
    raise InvalidCollectionError(f"Collection {collection_id!r} does not exist in the key-value store's schema.")


def collections_for_key(schema: dict[str, Any] | None, key: str) -> list[Collection]:
    return [c for c in collections_of(schema) if c.matches(key)]


def check_content_type(collections: list[Collection], key: str, content_type: str) -> None:
    for c in collections:
        if not c.allows(content_type):
            raise SchemaValidationError(
                f"Record {key!r} belongs to collection {c.id!r}, which allows content types "
                f"{', '.join(c.content_types or ())}; got {media_type(content_type)!r}."
            )


def needs_body_check(collections: list[Collection], content_type: str) -> bool:
    return is_json_type(content_type) and any(c.json_schema for c in collections)


def check_json_body(collections: list[Collection], key: str, content_type: str, body: bytes) -> None:
    try:
        doc = json.loads(body.decode(charset(content_type)))
    except (UnicodeDecodeError, ValueError) as err:
        raise SchemaValidationError(f"Record {key!r} is not valid JSON: {err}") from err
    for c in collections:
        if c.json_schema is None:
            continue
        import jsonschema

        error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(c.json_schema).iter_errors(doc))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise SchemaValidationError(
                f"Record {key!r} does not match the JSON schema of collection {c.id!r} at {where}: {error.message}",
                data={"collection": c.id, "path": where},
            )
