"""Console pages and actions over the service layer (in-process, every backend)."""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile

import httpx
import pytest

from conftest import ALICE_TOKEN
from console.conftest import Console
from kvbox.core.clock import FakeClock

pytestmark = pytest.mark.anyio


def first_match(pattern: str, page: str) -> str:
    """The first group of the pattern's first match in the page (which must have one)."""
    found = re.search(pattern, page)
    assert found, pattern
    return found.group(1)


async def new_store(console: Console, name: str = "") -> str:
    r = await console.post("/stores", {"name": name})
    assert r.status_code == 303, r.text
    return r.headers["location"].rsplit("/", 1)[-1]


async def test_store_list_hides_unnamed_stores_unless_asked(console: Console) -> None:
    await console.sign_in()
    named = await new_store(console, "visible")
    unnamed = await new_store(console, "")
    page = (await console.get("/stores")).text
    assert named in page and unnamed not in page
    assert "Include unnamed stores" in page
    page = (await console.get("/stores?unnamed=1")).text
    assert named in page and unnamed in page
    assert re.search(r"in 7 days", page)  # the unnamed store's expiry
    for column in ("ID", "Name", "Owner", "Records", "Size", "Created", "Modified", "Expires"):
        assert f">{column}<" in page, column


async def test_store_list_sorts_searches_and_pages(console: Console, clock: FakeClock) -> None:
    await console.sign_in()
    names = [f"s-{i:02d}" for i in range(25)]
    for name in names:
        await new_store(console, name)
        clock.advance(ms=5)
    newest_first = re.findall(r">(s-\d\d)</a>", (await console.get("/stores?per_page=20")).text)
    assert newest_first == names[::-1][:20]
    page2 = re.findall(r">(s-\d\d)</a>", (await console.get("/stores?per_page=20&page=2")).text)
    assert page2 == names[::-1][20:]
    by_name = re.findall(r">(s-\d\d)</a>", (await console.get("/stores?sort=name&dir=asc&per_page=20")).text)
    assert by_name == names[:20]
    found = (await console.get("/stores?q=S-1")).text
    assert re.findall(r">(s-\d\d)</a>", found) == [f"s-{i}" for i in range(19, 9, -1)]
    assert "Showing 1\u201310 of 10 stores" in found
    assert "No store matches" in (await console.get("/stores?q=no-such-store")).text  # "-" never occurs in an ID
    # Out-of-range pages are empty, never errors.
    assert (await console.get("/stores?page=99")).status_code == 200
    assert (await console.get("/stores?page=abc&per_page=-5&sort=bogus")).status_code == 200


async def test_create_store_named_unnamed_invalid_and_existing(console: Console) -> None:
    await console.sign_in()
    r = await console.post("/stores", {"name": "fresh"}, follow_redirects=True)
    assert "Store &#39;fresh&#39; was created." in r.text
    r = await console.post("/stores", {"name": "fresh"}, follow_redirects=True)
    assert "already have a store named" in r.text
    r = await console.post("/stores", {"name": "-bad-"}, follow_redirects=True)
    assert "store name may contain only" in r.text
    r = await console.post("/stores", {"name": ""}, follow_redirects=True)
    assert "An unnamed store was created." in r.text and "Will be deleted in 7 days" in r.text


async def test_store_detail_shows_ids_owner_times_counts_and_size(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "detail")
    assert (await console.upload(store, "k1", b"12345", "text/plain")).status_code == 201
    await console.get(f"/stores/{store}/records/k1")
    await console.get(f"/stores/{store}")  # lists the keys: counted once this page has rendered
    page = (await console.get(f"/stores/{store}")).text
    assert f'data-copy="{store}"' in page and 'data-copy="detail"' in page
    assert "Owned by <strong>alice</strong>" in page
    assert "alice/detail" in page
    assert re.search(r"<strong>1</strong> writes", page)
    assert re.search(r"<strong>[1-9]\d*</strong> reads", page)
    assert re.search(r"<strong>[1-9]\d*</strong> lists", page)
    assert "5 B" in page and "Will be deleted" not in page
    unnamed = await new_store(console, "")
    page = (await console.get(f"/stores/{unnamed}")).text
    assert "Will be deleted in 7 days" in page and f"#{unnamed}" in page


async def test_records_tab_lists_with_prefix_and_cursor_pages(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "paged")
    for i in range(120):
        await console.upload(store, f"item-{i:03d}", b"{}", "application/json")
    await console.upload(store, "other", b"x", "text/plain")
    page1 = (await console.get(f"/stores/{store}")).text
    keys1 = re.findall(r'data-key="([^"]+)"', page1)
    assert keys1 == [f"item-{i:03d}" for i in range(50)]
    assert "Page 1 of 3" in page1 and "application/json" in page1
    next_url = first_match(r'href="([^"]+)" data-swap="records" rel="next"', page1).replace("&amp;", "&")
    page2 = (await console.get(next_url)).text
    assert re.findall(r'data-key="([^"]+)"', page2)[0] == "item-050"
    next_url = first_match(r'href="([^"]+)" data-swap="records" rel="next"', page2).replace("&amp;", "&")
    page3 = (await console.get(next_url)).text
    assert re.findall(r'data-key="([^"]+)"', page3) == [*(f"item-{i:03d}" for i in range(100, 120)), "other"]
    assert 'rel="next"' not in page3
    prev_url = first_match(r'href="([^"]+)" data-swap="records" rel="prev"', page3).replace("&amp;", "&")
    back = (await console.get(prev_url)).text
    assert re.findall(r'data-key="([^"]+)"', back)[0] == "item-050"
    filtered = (await console.get(f"/stores/{store}?prefix=item-11")).text
    assert re.findall(r'data-key="([^"]+)"', filtered) == [f"item-11{i}" for i in range(10)]
    assert "No keys start with" in (await console.get(f"/stores/{store}?prefix=nope")).text


async def test_record_views_by_content_type(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "views")
    doc = {"name": "kvbox", "items": [1, 2, {"deep": None}], "ok": True}
    await console.upload(store, "doc", json.dumps(doc).encode(), "application/json; charset=utf-8")
    await console.upload(store, "notes", "héllo <b>text</b>\n".encode(), "text/plain; charset=utf-8")
    await console.upload(store, "pic", b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, "image/png")
    await console.upload(store, "blob", bytes(range(64)), "application/octet-stream")
    await console.upload(store, "broken", b"{not json", "application/json")

    page = (await console.get(f"/stores/{store}/records/doc")).text
    assert '<details class="j-node" open>' in page and 'class="j-key">&#34;items&#34;</span>' in page
    assert "Expand all" in page and "Collapse all" in page
    page = (await console.get(f"/stores/{store}/records/notes")).text
    assert "héllo &lt;b&gt;text&lt;/b&gt;" in page
    page = (await console.get(f"/stores/{store}/records/pic")).text
    assert f'<img src="/stores/{store}/records/pic/raw"' in page
    page = (await console.get(f"/stores/{store}/records/blob")).text
    assert "00000000  00 01 02 03" in page and "Binary data, 64 B" in page
    assert f'href="/stores/{store}/records/blob/raw?download=1"' in page
    page = (await console.get(f"/stores/{store}/records/broken")).text
    assert "not valid JSON" in page and "{not json" in page
    assert (await console.get(f"/stores/{store}/records/missing")).status_code == 404


async def test_compressed_records_are_previewed_decoded(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "gz")
    body = gzip.compress(json.dumps({"zipped": True}).encode())
    api = console.client
    headers = {"Authorization": f"Bearer {ALICE_TOKEN}", "content-type": "application/json", "content-encoding": "gzip"}
    r = await api.put(f"/v2/key-value-stores/{store}/records/z", content=body, headers=headers)
    assert r.status_code == 201
    page = (await console.get(f"/stores/{store}/records/z")).text
    assert "&#34;zipped&#34;" in page and "gzip-compressed" in page
    raw = await console.get(f"/stores/{store}/records/z/raw")
    assert json.loads(raw.content) == {"zipped": True}


async def test_raw_download_and_zip(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "files")
    await console.upload(store, "a.txt", b"alpha", "text/plain")
    await console.upload(store, "b.txt", b"beta", "text/plain")
    r = await console.get(f"/stores/{store}/records/a.txt/raw?download=1")
    assert r.content == b"alpha" and r.headers["content-disposition"] == 'attachment; filename="a.txt"'
    r = await console.get(f"/stores/{store}/download.zip")
    assert r.status_code == 303
    location = r.headers["location"]
    assert location.startswith(f"http://kvbox.test/v2/key-value-stores/{store}/records?signature=")
    # The redirect target works without any credentials, for a few minutes.
    async with httpx.AsyncClient(transport=console.client._transport, base_url="http://kvbox.test") as anonymous:
        zipped = await anonymous.get(location)
    assert zipped.status_code == 200
    with zipfile.ZipFile(io.BytesIO(zipped.content)) as zf:
        assert sorted(zf.namelist()) == ["a.txt", "b.txt"]
    r = await console.get(f"/stores/{store}/download.zip?prefix=b")
    assert "prefix=b" in r.headers["location"]


async def test_signed_link_of_a_record_works_anonymously(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "links")
    await console.upload(store, "shared", b"for anyone", "text/plain")
    page = (await console.get(f"/stores/{store}")).text
    link = first_match(r'data-copy="(http://kvbox\.test/v2/key-value-stores/[^"]+signature=[^"]+)"', page)
    async with httpx.AsyncClient(transport=console.client._transport, base_url="http://kvbox.test") as anonymous:
        r = await anonymous.get(link.replace("&amp;", "&"))
    assert r.status_code == 200 and r.content == b"for anyone"


async def test_upload_errors_come_back_as_json(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "errs")
    r = await console.upload(store, "bad key!", b"x", "text/plain")
    assert r.status_code == 400 and "invalid character" in r.json()["error"]["message"]
    r = await console.upload(store, "ok", b"x" * 10, "text/plain")
    assert r.status_code == 201 and r.json()["data"] == {"key": "ok", "size": 10, "contentType": "text/plain"}


async def test_delete_record_asks_first(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "del")
    await console.upload(store, "gone", b"x", "text/plain")
    r = await console.post(f"/stores/{store}/records/gone/delete", {"back": f"/stores/{store}"})
    assert r.status_code == 200 and "Delete record?" in r.text  # a confirmation page, nothing deleted yet
    assert "gone" in (await console.get(f"/stores/{store}")).text
    r = await console.post(f"/stores/{store}/records/gone/delete", {"confirm": "yes", "back": "https://evil.example"})
    assert r.status_code == 303 and r.headers["location"] == f"/stores/{store}"
    page = (await console.get(f"/stores/{store}")).text
    assert "Record &#39;gone&#39; was deleted." in page and 'data-key="gone"' not in page


async def test_rename_explains_named_and_unnamed(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "before")
    settings = (await console.get(f"/stores/{store}/settings")).text
    assert "is kept until you delete it" in settings and "deleted 7 days after its last write" in settings
    r = await console.post(f"/stores/{store}/rename", {"name": "after"}, follow_redirects=True)
    assert "now named &#39;after&#39; and will be kept" in r.text
    r = await console.post(f"/stores/{store}/rename", {"name": ""}, follow_redirects=True)
    assert "now unnamed: it will be deleted 7 days after its last use" in r.text
    assert "Will be deleted in 7 days" in r.text
    other = await new_store(console, "taken")
    r = await console.post(f"/stores/{store}/rename", {"name": "taken"}, follow_redirects=True)
    assert "already have a key-value store named" in r.text
    assert other


async def test_general_access_and_sharing(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "team")
    r = await console.post(
        f"/stores/{store}/access", {"general_access": "ANYONE_WITH_ID_CAN_READ"}, follow_redirects=True
    )
    assert "General access saved." in r.text
    assert re.search(r'value="ANYONE_WITH_ID_CAN_READ" checked', r.text)
    r = await console.post(f"/stores/{store}/access", {"general_access": "EVERYONE"}, follow_redirects=True)
    assert "generalAccess must be one of" in r.text
    r = await console.post(f"/stores/{store}/grants", {"username": "bob", "permission": "READ"}, follow_redirects=True)
    assert "bob now has READ access." in r.text and 'data-user="bob"' in r.text
    r = await console.post(f"/stores/{store}/grants", {"username": "bob", "permission": "WRITE"}, follow_redirects=True)
    assert "bob now has WRITE access." in r.text
    r = await console.post(
        f"/stores/{store}/grants", {"username": "nobody", "permission": "READ"}, follow_redirects=True
    )
    assert "was not found" in r.text
    r = await console.post(
        f"/stores/{store}/grants", {"username": "alice", "permission": "READ"}, follow_redirects=True
    )
    assert "always holds every permission" in r.text
    r = await console.post(f"/stores/{store}/grants/bob/delete", follow_redirects=True)
    assert "no longer shared with bob" in r.text and 'data-user="bob"' not in r.text


async def test_delete_store_needs_its_name(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "doomed")
    r = await console.post(f"/stores/{store}/delete", {"confirm": "wrong"}, follow_redirects=True)
    assert "Type &#39;doomed&#39; to confirm" in r.text
    assert (await console.get(f"/stores/{store}")).status_code == 200
    r = await console.post(f"/stores/{store}/delete", {"confirm": "doomed"})
    assert r.status_code == 303 and r.headers["location"] == "/stores"
    assert (await console.get(f"/stores/{store}")).status_code == 404
    unnamed = await new_store(console, "")
    r = await console.post(f"/stores/{unnamed}/delete", {"confirm": unnamed}, follow_redirects=True)
    assert "and all its records were deleted" in r.text


async def test_api_tab_lists_every_endpoint_for_this_server(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "apis")
    page = (await console.get(f"/stores/{store}/api")).text
    base = f"http://kvbox.test/v2/key-value-stores/{store}"
    for url in (base, f"{base}/keys", f"{base}/records", f"{base}/records/OUTPUT", f"{base}/grants",
                "http://kvbox.test/v2/key-value-stores/alice~apis"):  # fmt: skip
        assert f'data-copy="{url}"' in page, url
    assert "from apify_client import ApifyClient" in page and "from kvbox.client import KvboxClient" in page
    assert page.count("curl ") >= 12


async def test_account_default_access(console: Console) -> None:
    await console.sign_in()
    r = await console.post("/account", {"default_general_access": "ANYONE_WITH_ID_CAN_READ"}, follow_redirects=True)
    assert "Default general access saved." in r.text
    user = await console.services.users.find_user("alice")
    assert user.default_general_access.value == "ANYONE_WITH_ID_CAN_READ"
    r = await console.post("/account", {"default_general_access": "ANYONE_WITH_NAME_CAN_READ"}, follow_redirects=True)
    assert "RESTRICTED or ANYONE_WITH_ID_CAN_READ" in r.text
