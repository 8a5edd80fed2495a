"""Finding and creating store folders under `{storage_dir}/key_value_stores/`.

The folder is named after the store (`default` for the default store); the store's ID lives
in the folder's `__metadata__.json`, as crawlee-python writes it, so opening by ID scans the
folders. A folder without metadata (a hand-made `default/INPUT.json`, a Crawlee JS folder)
gets metadata with a fresh ID on first open. `open_store_folder` opens one store folder at
any path, for tools that move folders between machines and servers.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

from kvbox.core.errors import InvalidStoreNameError, StorageError, StoreNotFoundError
from kvbox.core.ids import new_id
from kvbox.sdk.local import files, layout
from kvbox.sdk.local.store import LocalStore
from kvbox.sdk.models import StoreMetadata


def stores_root(storage_dir: str) -> str:
    return os.path.join(storage_dir, layout.STORES_SUBDIR)


def _metadata(directory: str) -> StoreMetadata | None:
    data = files.read_json(os.path.join(directory, layout.METADATA_FILE))
    if data is None or not isinstance(data.get("id"), str):
        return None
    name = data.get("name")
    return StoreMetadata(
        id=data["id"],
        name=name if isinstance(name, str) else None,
        created_at=files.parse_timestamp(data.get("created_at") or data.get("createdAt")),
        accessed_at=files.parse_timestamp(data.get("accessed_at") or data.get("accessedAt")),
        modified_at=files.parse_timestamp(data.get("modified_at") or data.get("modifiedAt")),
    )


def _ensure_metadata(directory: str, name: str | None, store_id: str | None = None) -> StoreMetadata:
    found = _metadata(directory)
    if found is not None:
        return found
    now = datetime.now(UTC)
    created = StoreMetadata(id=store_id or new_id(), name=name, created_at=now, accessed_at=now, modified_at=now)
    payload = files.store_metadata_bytes(created.id, name, now, now, now)
    if files.create_exclusive(directory, layout.METADATA_FILE, payload):
        return created
    # Another process created the metadata first: its ID wins for everyone.
    return _metadata(directory) or created


def open_folder(
    storage_dir: str,
    *,
    name: str | None = None,
    id: str | None = None,
    durable: bool = False,
    input_keys: frozenset[str] = frozenset({"INPUT"}),
) -> LocalStore:
    """Open (creating when needed) the store called `name`, or the default store; or find one by `id`."""
    root = stores_root(storage_dir)
    if id is not None:
        directory = find_by_id(root, id)
        meta = _ensure_metadata(directory, None)
        return LocalStore(directory, meta, durable=durable, input_keys=input_keys)
    folder = name or layout.DEFAULT_STORE_DIR
    if not layout.valid_store_dir_name(folder):
        raise InvalidStoreNameError(f"Invalid store name {folder!r}: it must be one folder name")
    directory = os.path.join(root, folder)
    os.makedirs(directory, exist_ok=True)
    meta = _ensure_metadata(directory, name)
    return LocalStore(directory, meta, durable=durable, input_keys=input_keys)


def open_store_folder(
    directory: str,
    *,
    id: str | None = None,
    name: str | None = None,
    read_only: bool = False,
    durable: bool = False,
    input_keys: frozenset[str] = frozenset({"INPUT"}),
) -> LocalStore:
    """Open the store folder `directory` itself, wherever it is (`open_folder` looks under a storage dir).

    Writable (the default): the folder is created when missing and keeps the metadata it
    has; a folder without metadata gets ID `id` (or a fresh one) and name `name`, else its
    folder's name, except that a folder called `default` holds the unnamed default store.

    `read_only`: nothing is ever written, not even timestamps, so a folder on a read-only
    disk can be listed and read. Its metadata is read when present; without it, the ID is
    empty and the store unnamed.
    """
    if read_only:
        meta = _metadata(directory) or StoreMetadata("", None, created_at=None, accessed_at=None, modified_at=None)
        return LocalStore(directory, meta, durable=durable, input_keys=input_keys, read_only=True)
    os.makedirs(directory, exist_ok=True)
    folder = os.path.basename(os.path.normpath(directory))
    meta = _ensure_metadata(directory, None if folder == layout.DEFAULT_STORE_DIR else (name or folder), id)
    return LocalStore(directory, meta, durable=durable, input_keys=input_keys)


def find_by_id(root: str, store_id: str) -> str:
    """The folder whose metadata has `store_id`; `StoreNotFoundError` when none has."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except FileNotFoundError:
        entries = []
    for entry in entries:
        if not entry.is_dir():
            continue
        try:
            meta = _metadata(entry.path)
        except StorageError:
            continue  # another store's corrupt metadata must not hide the one asked for
        if meta is not None and meta.id == store_id:
            return entry.path
    raise StoreNotFoundError(f'Key-value store with ID "{store_id}" was not found in {root}')
