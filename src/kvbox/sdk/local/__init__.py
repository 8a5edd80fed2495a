"""Local mode: stores as folders of files, `{storage_dir}/key_value_stores/{store}/{KEY}.{EXT}`.

The public surface for tools working on folders directly (the CLI's `push` and `pull`):

- `open_folder(storage_dir, name=..., id=...)`: a store under a storage dir, as the SDK opens it;
  `open_store_folder(directory, read_only=...)`: one store folder at any path.
- `LocalStore`: `record_files()` lists every record with its exact content type, size and path;
  `read`, `write`, `write_stream` and `open_writer` (a record streamed in, then replaced in one
  step), `delete`, `keys`.
- The layout's names: `STORES_SUBDIR` (`key_value_stores`), `DEFAULT_STORE_DIR` (`default`),
  `METADATA_FILE` (a store folder's `__metadata__.json`), and `type_for_extension`, the
  content type a file extension stands for.
"""

from kvbox.sdk.local.files import AtomicFile
from kvbox.sdk.local.folders import find_by_id, open_folder, open_store_folder
from kvbox.sdk.local.layout import DEFAULT_STORE_DIR, METADATA_FILE, STORES_SUBDIR, type_for_extension
from kvbox.sdk.local.store import LocalStore, Located, RecordFile

__all__ = [
    "DEFAULT_STORE_DIR",
    "METADATA_FILE",
    "STORES_SUBDIR",
    "AtomicFile",
    "LocalStore",
    "Located",
    "RecordFile",
    "find_by_id",
    "open_folder",
    "open_store_folder",
    "type_for_extension",
]
