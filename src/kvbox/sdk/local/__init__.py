"""Local mode: stores as folders of files, `{storage_dir}/key_value_stores/{store}/{KEY}.{EXT}`."""

from kvbox.sdk.local.folders import find_by_id, open_folder
from kvbox.sdk.local.store import LocalStore, Located

__all__ = ["LocalStore", "Located", "find_by_id", "open_folder"]
