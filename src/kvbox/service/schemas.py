"""Key-value store schemas: validating a schema, matching keys to collections, checking writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kvbox.core.content import charset, is_json_type, media_type
from kvbox.core.errors import (
    InvalidCollectionError,
    InvalidContentTypeError,
    SchemaValidationError,
    StoreSchemaInvalidError,
)
from kvbox.core.parsing import load_json
from kvbox.service.schemarefs import SchemaRefError, check_refs


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
        _parse_collection(cid, spec, check=True)
    return schema


def _parse_collection(cid: str, spec: Any, *, check: bool = False) -> Collection:
    """A collection of a schema; `check` also proves its JSON schema valid and its references
    safe to follow (done once, when the schema is set)."""
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
    if js is not None and not isinstance(js, dict):
        raise StoreSchemaInvalidError(f"Collection {cid!r}: jsonSchema must be an object.")
    if js is not None and check:
        _check_json_schema(cid, js)
    return Collection(cid, key, prefix, tuple(types) if types is not None else None, js)


def _check_json_schema(cid: str, js: dict[str, Any]) -> None:
    import jsonschema  # imported on first use: it costs every server process ~11 MiB

    try:
        jsonschema.Draft7Validator.check_schema(js)
        check_refs(js)
    except jsonschema.SchemaError as err:
        raise StoreSchemaInvalidError(f"Collection {cid!r}: jsonSchema is invalid: {err.message}") from None
    except SchemaRefError as err:
        raise StoreSchemaInvalidError(f"Collection {cid!r}: jsonSchema is invalid: {err}") from None
    except RecursionError:  # a schema within the depth limit never gets here; kept as the last guard
        raise StoreSchemaInvalidError(f"Collection {cid!r}: jsonSchema is nested too deeply.") from None


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


def check_charset(content_type: str) -> None:
    """A JSON record checked against a schema is decoded with its declared charset: it must exist."""
    name = charset(content_type)
    try:
        # Not b"": empty input is decoded without looking the codec up. LookupError also
        # comes for codecs that are not text encodings (base64, zlib).
        b"{}".decode(name)
    except LookupError:
        raise InvalidContentTypeError(f"Unknown charset {name[:100]!r} in the Content-Type header.") from None
    except ValueError:
        pass  # a real codec, to which these two bytes mean nothing


def check_json_body(collections: list[Collection], key: str, content_type: str, body: bytes) -> None:
    try:
        doc = load_json(body.decode(charset(content_type)), storable=False)
    except (LookupError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        raise SchemaValidationError(f"Record {key!r} is not valid JSON: {err}") from None
    for c in collections:
        if c.json_schema is not None:
            _validate(c, key, doc)


def _validate(c: Collection, key: str, doc: Any) -> None:
    import jsonschema
    from referencing.exceptions import Unresolvable

    assert c.json_schema is not None
    try:
        error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(c.json_schema).iter_errors(doc))
    except (RecursionError, Unresolvable) as err:
        # Only schemas set before their references were checked get here.
        raise SchemaValidationError(
            f"Record {key!r} cannot be validated: the JSON schema of collection {c.id!r} is unusable ({err})."
        ) from None
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        raise SchemaValidationError(
            f"Record {key!r} does not match the JSON schema of collection {c.id!r} at {where}: {error.message}",
            data={"collection": c.id, "path": where},
        )
