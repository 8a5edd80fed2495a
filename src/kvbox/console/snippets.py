"""The API tab: every endpoint of one store with full URLs for this server, and snippets
ready to run with curl, the official `apify-client` and `kvbox.client`."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from kvbox.console.stores import load_store, store_context
from kvbox.console.web import Caller, Console
from kvbox.core.models import Store
from kvbox.core.urls import record_path, store_path

EXAMPLE_KEY = "OUTPUT"


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    url: str
    title: str
    curl: str


def endpoints(base: str, store: Store, owner: str) -> list[Endpoint]:
    s = base + store_path(store.id)
    auth = '-H "Authorization: Bearer $KVBOX_TOKEN"'
    rec = base + record_path(store.id, EXAMPLE_KEY)
    rows = [
        ("GET", s, "Get the store", f'curl {auth} "{s}"'),
        ("PUT", s, "Rename the store or change its general access",
         f'curl -X PUT {auth} -H "Content-Type: application/json" \\\n     --data \'{{"name": "new-name"}}\' "{s}"'),
        ("DELETE", s, "Delete the store", f'curl -X DELETE {auth} "{s}"'),
        ("GET", f"{s}/keys", "List keys (exclusiveStartKey, limit, prefix)",
         f'curl {auth} "{s}/keys?limit=100"'),
        ("GET", f"{s}/records", "Download all records as a ZIP (prefix)",
         f'curl {auth} -o records.zip "{s}/records"'),
        ("GET", rec, "Get a record", f'curl {auth} "{rec}"'),
        ("HEAD", rec, "Check that a record exists", f'curl -I {auth} "{rec}"'),
        ("PUT", rec, "Store a record (the body is kept byte for byte)",
         f'curl -X PUT {auth} -H "Content-Type: application/json" \\\n     --data \'{{"hello": "world"}}\' "{rec}"'),
        ("DELETE", rec, "Delete a record", f'curl -X DELETE {auth} "{rec}"'),
        ("GET", f"{s}/grants", "Who the store is shared with", f'curl {auth} "{s}/grants"'),
        ("PUT", f"{s}/grants/USERNAME", "Share the store with a user (READ, WRITE or MANAGE)",
         f'curl -X PUT {auth} -H "Content-Type: application/json" \\\n     --data \'{{"permission": "READ"}}\' '
         f'"{s}/grants/USERNAME"'),
        ("DELETE", f"{s}/grants/USERNAME", "Stop sharing with a user", f'curl -X DELETE {auth} "{s}/grants/USERNAME"'),
    ]  # fmt: skip
    if store.name:
        by_name = base + store_path(f"{owner}~{store.name}")
        rows.insert(1, ("GET", by_name, "Get the store by owner and name", f'curl {auth} "{by_name}"'))
    return [Endpoint(*row) for row in rows]


def apify_client_snippet(base: str, store: Store) -> str:
    return f'''import os

from apify_client import ApifyClient

client = ApifyClient(os.environ["KVBOX_TOKEN"], api_url="{base}", api_public_url="{base}")
store = client.key_value_store("{store.id}")

print(store.get())
store.set_record("{EXAMPLE_KEY}", {{"hello": "world"}})
print(store.get_record("{EXAMPLE_KEY}"))
for item in store.iterate_keys():
    print(item.key, item.size)
print(store.get_record_public_url("{EXAMPLE_KEY}"))
'''


def kvbox_client_snippet(base: str, store: Store) -> str:
    return f'''import os

from kvbox.client import KvboxClient

with KvboxClient(os.environ["KVBOX_TOKEN"], api_url="{base}") as client:
    store = client.key_value_store("{store.id}")
    print(store.get())
    store.set_record("{EXAMPLE_KEY}", {{"hello": "world"}})
    print(store.get_record("{EXAMPLE_KEY}"))
    for item in store.iterate_keys():
        print(item.key, item.size)
    store.download_zip("records.zip")
'''


async def api_tab(console: Console, request: Request, caller: Caller) -> Response:
    resolved = await load_store(console, caller, request.path_params["store"])
    base = console.services.settings.base_url
    context = store_context(console, resolved, "api")
    store = resolved.store
    return console.render(
        request, "store_api.html", caller, **context, base=base, endpoints=endpoints(base, store, context["owner"]),
        apify_snippet=apify_client_snippet(base, store), kvbox_snippet=kvbox_client_snippet(base, store),
        env_snippet=f'export KVBOX_TOKEN=...  # your API token\nexport APIFY_API_BASE_URL={base}',
    )  # fmt: skip
