"""Record lifecycle in the console: expiry rules on the settings tab, expiry in the records
table and on a record's page, deleting by prefix after a confirmation (every backend)."""

from __future__ import annotations

import pytest

from console.conftest import Console
from console.test_pages import new_store
from kvbox.core.clock import FakeClock

pytestmark = pytest.mark.anyio


async def test_expiry_rules_on_the_settings_tab(console: Console, clock: FakeClock) -> None:
    await console.sign_in()
    store = await new_store(console, "rules")
    settings = (await console.get(f"/stores/{store}/settings")).text
    assert "Record expiry" in settings and "do not expire unless written with an expiry" in settings
    r = await console.post(f"/stores/{store}/expiry", {"action": "add", "prefix": "", "after": "1d"})
    assert r.status_code == 303 and r.headers["location"].endswith("/settings#expiry")
    r = await console.post(f"/stores/{store}/expiry", {"action": "add", "prefix": "tmp-", "after": "90m"},
                           follow_redirects=True)  # fmt: skip
    assert "whose key starts with &#39;tmp-&#39; now expire 2 hours after their last write" in r.text
    assert 'data-prefix="tmp-"' in r.text and "every key" in r.text
    stored = await console.services.index.get_store(store)
    assert stored is not None and [(x.prefix, x.expire_after_secs) for x in stored.record_expiry.rules] == [
        ("tmp-", 5400), ("", 86400)
    ]  # fmt: skip
    r = await console.post(f"/stores/{store}/expiry", {"action": "add", "after": "soon"}, follow_redirects=True)
    assert "is not a duration" in r.text
    r = await console.post(f"/stores/{store}/expiry", {"action": "remove", "prefix": "tmp-"}, follow_redirects=True)
    assert 'data-prefix="tmp-"' not in r.text and 'data-prefix=""' in r.text

    # The records table and a record's page show when records expire.
    await console.upload(store, "page", b"x", "text/plain")
    table = (await console.get(f"/stores/{store}")).text
    assert "Expires" in table and "never" not in table.split('data-key="page"')[1].split("</tr>")[0]
    record = (await console.get(f"/stores/{store}/records/page")).text
    assert 'id="record-expires"><time' in record
    clock.advance(days=1)
    await console.sign_in()  # the session would have lapsed meanwhile
    assert 'data-key="page"' not in (await console.get(f"/stores/{store}")).text
    assert (await console.get(f"/stores/{store}/records/page")).status_code == 404


async def test_a_reader_cannot_change_rules(console: Console, other: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "mine")
    await other.sign_in("bob-token-0123456789ab")
    r = await other.post(f"/stores/{store}/expiry", {"action": "add", "after": "1d"})
    stored = await console.services.index.get_store(store)
    assert r.status_code in (303, 404) and stored is not None and stored.record_expiry.rules == ()


async def test_delete_by_prefix_asks_first(console: Console) -> None:
    await console.sign_in()
    store = await new_store(console, "tmp")
    for key in ("tmp-1", "tmp-2", "keep"):
        await console.upload(store, key, b"x", "text/plain")
    page = (await console.get(f"/stores/{store}", params={"prefix": "tmp-"})).text
    assert "Delete matching records…" in page
    r = await console.post(f"/stores/{store}/delete-prefix", {"prefix": "tmp-"})
    assert r.status_code == 200 and "Delete records?" in r.text and "<code>tmp-</code>" in r.text
    assert 'data-key="tmp-1"' in (await console.get(f"/stores/{store}")).text  # nothing deleted yet
    r = await console.post(
        f"/stores/{store}/delete-prefix", {"prefix": "tmp-", "confirm": "yes"}, follow_redirects=True
    )
    assert "Deleted 2 records whose key starts with &#39;tmp-&#39;." in r.text
    assert 'data-key="tmp-1"' not in r.text and 'data-key="keep"' in r.text
    r = await console.post(f"/stores/{store}/delete-prefix", {"prefix": ""})
    assert "Delete <strong>every record</strong>" in r.text
    r = await console.post(f"/stores/{store}/delete-prefix", {"prefix": "", "confirm": "yes"}, follow_redirects=True)
    assert "Deleted 1 record." in r.text and "This store has no records yet." in r.text
