"""The kvbox SDK: `KeyValueStore` (async), `KeyValueStoreSync` and `Actor`, shaped like crawlee and the Apify SDK.

Mode. Local by default: `{storage_dir}/key_value_stores/{store}/{KEY}.{EXT}`, the storage dir
from `KVBOX_STORAGE_DIR`, `APIFY_LOCAL_STORAGE_DIR`, `CRAWLEE_STORAGE_DIR`, else `./storage`.
Remote with `KVBOX_API_URL` and `KVBOX_TOKEN` (optionally `KVBOX_API_PUBLIC_URL`,
`KVBOX_DEFAULT_KEY_VALUE_STORE_ID`), or with `APIFY_IS_AT_HOME` and `APIFY_API_BASE_URL`,
`APIFY_TOKEN`, `APIFY_DEFAULT_KEY_VALUE_STORE_ID`. `KVBOX_DURABLE=1` fsyncs local writes.

Values, the same in both modes: dict, list, int, float and bool are stored as JSON, str as
text, bytes as bytes; on reading, JSON is parsed, `text/*` and `application/*xml` become str,
everything else bytes.

Beyond crawlee: `update_value(key, fn, retries=...)` changes a value with no other write in
between (a compare-and-set with `If-Match` remotely; locally under the store folder's lock,
which every kvbox write to the folder takes), and `get_record_range` and `stream` read part
of a record (a range read remotely).

Where kvbox differs from the Apify SDK and crawlee (on purpose):

- `set_value(key, None)` deletes the record, as the platform docs and the JS SDK say; the
  Python SDK stores a None record instead.
- Numbers and booleans are JSON locally too (crawlee's file system stores them as text and
  reads back a str); XML reads back as str locally too (crawlee: bytes); a str given with a
  JSON content type is stored as it is and reads back parsed (crawlee encodes it twice).
- Keys follow the platform's rule (1-256 of `a-zA-Z0-9!-_.'()`) for writes in both modes, so
  a local folder can always be pushed to a server. Local reads and deletes also reach keys
  that crawlee wrote freely (`a/b c`), so such folders open and can be cleaned up.
- The local layout is `{KEY}.{EXT}` (a sidecar only when the extension cannot carry the exact
  content type), which Crawlee JS and crawlee-python 0.x read; crawlee-python 1.x folders
  open in kvbox, but crawlee-python 1.x does not see kvbox's sidecar-less files.
- Nothing is purged on start: local data, including `INPUT.json`, is only removed by
  `delete_value`, `set_value(key, None)` or `drop`.
- The remote default store is the store with the configured default ID (an error if it does
  not exist), else the caller's store named `default`; the Apify SDK silently creates a new
  unnamed store instead. The name `default` and the default store are the same store.
- `get_public_url` of a missing record raises locally (crawlee returns a `file://` URI for
  any key); remotely it returns the signed URL, which works once the record exists.
- Key listings carry the content type locally and None remotely (the API does not list it;
  crawlee's remote client reports `application/octet-stream`).
- Leaving `async with Actor:` never ends the process; input secrets are not decrypted.
- Local store timestamps are written at most once a second and on `close_all()`, not on
  every call.
"""

from kvbox.sdk.actor import Actor, ActorType
from kvbox.sdk.config import Configuration
from kvbox.sdk.key_value_store import KeyValueStore
from kvbox.sdk.key_value_store_sync import KeyValueStoreSync
from kvbox.sdk.models import RecordMetadata, StoreMetadata

__all__ = [
    "Actor",
    "ActorType",
    "Configuration",
    "KeyValueStore",
    "KeyValueStoreSync",
    "RecordMetadata",
    "StoreMetadata",
]
