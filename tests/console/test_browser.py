"""The console in headless Chromium against a real `kvbox serve`: what a person does, step by step.

Every page visited is saved under tests/console/screenshots/ (desktop, phone and dark mode)
for reviewers to look at.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from console.conftest import LiveServer

pytestmark = pytest.mark.slow

DESKTOP: dict[str, Any] = {"viewport": {"width": 1280, "height": 860}}
PHONE: dict[str, Any] = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}
DARK: dict[str, Any] = {**DESKTOP, "color_scheme": "dark"}
VARIANTS = {"desktop": DESKTOP, "phone": PHONE, "dark": DARK}

HOSTILE_HTML = (
    b"<!doctype html><title>scraped</title><h1>Scraped page</h1><p>Hello <b>world</b></p>"
    b"<script>document.body.append('SCRIPT RAN'); try { parent.document.title = 'pwned' } catch (e) {}</script>"
)


def png(width: int = 48, height: int = 32) -> bytes:
    rows = b"".join(
        b"\x00" + b"".join(bytes((x * 5 % 256, y * 8 % 256, 200)) for x in range(width)) for y in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture
def pages(browser: Any, live: LiveServer) -> Iterator[Any]:
    """Opens signed-in pages in fresh browser contexts; closes them all afterwards."""
    contexts: list[Any] = []

    def open_page(variant: str = "desktop", *, token: str | None = None, sign_in: bool = True, **extra: Any) -> Any:
        context = browser.new_context(base_url=live.url, **VARIANTS[variant], **extra)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        if sign_in:
            page.goto("/sign-in")
            page.fill("#token", token or live.admin_token)
            page.press("#token", "Enter")
            page.wait_for_url(re.compile(r".*/stores$"))
        return page

    yield open_page
    for context in contexts:
        context.close()


def shoot(page: Any, screenshots: Path, name: str, *, full: bool = True) -> None:
    page.wait_for_load_state("load")
    page.screenshot(path=str(screenshots / f"{name}.png"), full_page=full)


def each_variant(pages: Any, screenshots: Path, name: str, path: str) -> None:
    """The same page at desktop and phone widths and in dark mode."""
    for variant in VARIANTS:
        page = pages(variant)
        page.goto(path)
        shoot(page, screenshots, f"{name}-{variant}", full=variant != "phone")


def make_store(live: LiveServer, name: str | None, records: dict[str, tuple[bytes, str]] | None = None) -> str:
    with live.api() as api:
        params = {"name": name} if name else {}
        r = api.post("/v2/key-value-stores", params=params)
        r.raise_for_status()
        store = str(r.json()["data"]["id"])
        for key, (body, ctype) in (records or {}).items():
            api.put(
                f"/v2/key-value-stores/{store}/records/{key}", content=body, headers={"content-type": ctype}
            ).raise_for_status()
        return store


def test_sign_in_with_keyboard_and_sign_out(pages: Any, live: LiveServer, screenshots: Path) -> None:
    page = pages(sign_in=False)
    page.goto("/stores")
    assert "/sign-in" in page.url  # unauthenticated pages redirect to sign-in
    shoot(page, screenshots, "sign-in-desktop")
    # The token field has focus; before it come the home link and the skip link, and focus is visible.
    assert page.evaluate("document.activeElement.id") == "token"
    page.fill("#token", "wrong-token-0000000000")
    page.keyboard.press("Enter")
    page.wait_for_selector("#sign-in-error")
    assert "not valid" in page.inner_text("#sign-in-error")
    shoot(page, screenshots, "sign-in-error-desktop")
    assert page.evaluate("document.activeElement.id") == "token"
    page.keyboard.press("Shift+Tab")  # before the form: the home link, then the skip link
    assert page.evaluate("document.activeElement.className") == "brand"
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.className") == "skip-link"
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    page.fill("#token", live.admin_token)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/stores$"))
    assert page.is_visible("text=Key-value stores")
    page.click("button:has-text('Sign out')")
    page.wait_for_url(re.compile(r".*/sign-in$"))
    assert page.is_visible("text=You are signed out.")
    page.goto("/stores")
    assert "/sign-in" in page.url
    for variant in ("phone", "dark"):
        p = pages(variant, sign_in=False)
        p.goto("/sign-in")
        shoot(p, screenshots, f"sign-in-{variant}", full=False)


def test_store_list_with_and_without_unnamed_stores(pages: Any, live: LiveServer, screenshots: Path) -> None:
    named = make_store(live, "list-named", {"OUTPUT": (b'{"ok": true}', "application/json")})
    unnamed = make_store(live, None, {"OUTPUT": (b"{}", "application/json")})
    page = pages()
    rows = page.locator("#stores-table tbody tr")
    assert page.locator(f"#stores-table >> text={named}").count() == 1
    assert page.locator(f"#stores-table >> text={unnamed}").count() == 0
    shoot(page, screenshots, "stores-named-only-desktop")
    page.check("text=Include unnamed stores")  # applies itself (partial update, no reload)
    page.wait_for_url(re.compile(r".*unnamed=1.*"))
    page.wait_for_selector(f"#stores-table >> text={unnamed}")
    assert page.locator(f"#stores-table tr:has-text('{unnamed}') >> text=/in 7 days/").count() == 1
    assert rows.count() >= 2
    shoot(page, screenshots, "stores-with-unnamed-desktop")
    page.fill("#q", "list-named")
    page.wait_for_function("() => document.querySelectorAll('#stores-table tbody tr').length === 1")
    assert page.inner_text("#stores-table tbody").count("list-named") == 1
    # Sorting by a column header.
    page.fill("#q", "")
    page.wait_for_function("() => document.querySelectorAll('#stores-table tbody tr').length >= 2")
    page.click("#stores-table th >> text=Name")
    page.wait_for_url(re.compile(r".*sort=name.*"))
    # Create a store from the list.
    page.click("summary:has-text('Create store')")
    page.fill("#new-name", "made-in-browser")
    page.click("form.popover-form button:has-text('Create')")
    page.wait_for_selector("h1:has-text('made-in-browser')")
    assert page.is_visible("text=Store 'made-in-browser' was created.")
    each_variant(pages, screenshots, "stores", "/stores?unnamed=1")


def test_upload_and_view_json_text_image_html_and_binary(pages: Any, live: LiveServer, screenshots: Path,
                                                          tmp_path: Path) -> None:  # fmt: skip
    store = make_store(live, "browser-records")
    files = {
        "data.json": json.dumps(
            {"title": "kvbox", "items": [{"id": i, "tags": ["a", "b"]} for i in range(3)]}
        ).encode(),
        "notes.txt": b"Plain text record\nsecond line\n",
        "pixel.png": png(),
        "page.html": HOSTILE_HTML,
        "blob.bin": bytes(range(256)),
    }
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    page = pages()
    page.goto(f"/stores/{store}")
    page.set_input_files("#upload-files", [str(tmp_path / name) for name in files])
    page.wait_for_selector(".upload-list:not([hidden])")
    # Keys and content types can be edited before the upload.
    key_input = page.locator("input[aria-label='Key for notes.txt']")
    key_input.fill("NOTES")
    type_input = page.locator("input[aria-label='Content type for blob.bin']")
    type_input.fill("application/x-kvbox-test")
    assert page.locator("input[aria-label='Content type for pixel.png']").input_value() == "image/png"
    shoot(page, screenshots, "upload-ready-desktop")
    page.click("[data-upload-start]")
    page.wait_for_selector(".upload-status:has-text('5 uploaded')")
    done = page.evaluate("Array.from(document.querySelectorAll('.upload-row progress')).map(p => p.value === p.max)")
    assert done == [True] * 5
    assert page.evaluate(
        "document.querySelector('.upload-total').value === document.querySelector('.upload-total').max"
    )
    page.wait_for_selector("#records-table tr[data-key='NOTES']")
    keys = page.eval_on_selector_all("#records-table tbody tr", "rows => rows.map(r => r.dataset.key)")
    assert sorted(keys) == sorted(["NOTES", "blob.bin", "data.json", "page.html", "pixel.png"])
    assert "application/x-kvbox-test" in page.inner_text("#records-table tr[data-key='blob.bin']")
    shoot(page, screenshots, "records-desktop")

    # JSON: pretty-printed and collapsible.
    page.click("#records-table tr[data-key='data.json'] >> text=View")
    page.wait_for_selector("#json-preview")
    assert '"title"' in page.inner_text("#json-preview")
    shoot(page, screenshots, "record-json-desktop")
    page.click("text=Collapse all")
    assert page.evaluate("Array.from(document.querySelectorAll('#json-preview details')).every(d => !d.open)")
    page.click("text=Expand all")
    assert page.evaluate("Array.from(document.querySelectorAll('#json-preview details')).every(d => d.open)")

    page.goto(f"/stores/{store}/records/NOTES")
    assert "second line" in page.inner_text("#text-preview")
    shoot(page, screenshots, "record-text-desktop")

    page.goto(f"/stores/{store}/records/pixel.png")
    page.wait_for_function("() => document.querySelector('#image-preview').complete")
    assert page.evaluate("document.querySelector('#image-preview').naturalWidth") == 48
    shoot(page, screenshots, "record-image-desktop")

    page.goto(f"/stores/{store}/records/blob.bin")
    assert "00000000  00 01 02 03" in page.inner_text("#hex-preview")
    shoot(page, screenshots, "record-binary-desktop")

    # HTML: escaped source, or rendered in a sandbox where its script never runs.
    page.goto(f"/stores/{store}/records/page.html")
    assert "<script>document.body.append" in page.inner_text("#text-preview")
    page.click("text=Rendered (sandboxed)")
    page.wait_for_selector("#html-frame")
    frame = page.frame_locator("#html-frame")
    assert frame.locator("h1").inner_text() == "Scraped page"
    assert "SCRIPT RAN" not in frame.locator("body").inner_text()
    assert page.title() != "pwned" and "pwned" not in page.title()
    assert page.get_attribute("#html-frame", "sandbox") == ""
    shoot(page, screenshots, "record-html-desktop")
    for variant in ("phone", "dark"):
        p = pages(variant)
        p.goto(f"/stores/{store}/records/data.json")
        shoot(p, screenshots, f"record-json-{variant}", full=variant != "phone")
    each_variant(pages, screenshots, "records", f"/stores/{store}")


def test_delete_record_with_confirmation(pages: Any, live: LiveServer, screenshots: Path) -> None:
    store = make_store(live, "browser-delete", {"keep": (b"1", "text/plain"), "drop": (b"2", "text/plain")})
    page = pages()
    page.goto(f"/stores/{store}")
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#records-table tr[data-key='drop'] >> text=Delete")
    assert page.locator("#records-table tr[data-key='drop']").count() == 1  # cancelled: still there
    messages: list[str] = []

    def accept(dialog: Any) -> None:
        messages.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    page.click("#records-table tr[data-key='drop'] >> text=Delete")
    page.wait_for_selector(".flash:has-text(\"Record 'drop' was deleted.\")")
    assert "drop" in messages[0]
    assert page.locator("#records-table tr[data-key='drop']").count() == 0
    assert page.locator("#records-table tr[data-key='keep']").count() == 1
    shoot(page, screenshots, "record-deleted-desktop")


def test_rename_and_share(pages: Any, live: LiveServer, screenshots: Path) -> None:
    store = make_store(live, "browser-settings", {"A": (b"1", "text/plain")})
    page = pages()
    page.goto(f"/stores/{store}/settings")
    assert page.is_visible("text=is kept until you delete it")
    page.fill("#store-name-input", "browser-renamed")
    page.click("text=Save name")
    page.wait_for_selector("h1:has-text('browser-renamed')")
    assert page.is_visible("text=now named 'browser-renamed' and will be kept")
    # Sharing: add bob with READ, raise to WRITE, then remove.
    page.fill("#share-user", "bob")
    page.select_option("#share-perm", "READ")
    page.click("#share-form >> text=Share")
    page.wait_for_selector("#grants-table tr[data-user='bob']")
    assert page.is_visible("text=bob now has READ access.")
    bob = pages(token=live.bob_token)
    bob.goto("/stores")
    assert bob.locator("#stores-table >> text=browser-renamed").count() == 1
    bob.goto(f"/stores/{store}")
    assert bob.is_visible("text=You can read") and bob.locator("#upload").count() == 0
    page.select_option("#grants-table tr[data-user='bob'] select", "WRITE")  # applies itself
    page.wait_for_selector("text=bob now has WRITE access.")
    bob.reload()
    assert bob.locator("#upload").count() == 1
    shoot(page, screenshots, "settings-shared-desktop")
    page.click("#grants-table tr[data-user='bob'] >> text=Remove")
    page.wait_for_selector("text=The store is no longer shared with bob.")
    assert page.locator("#grants-table").count() == 0
    bob.reload()
    assert "Store not found" in bob.inner_text("h1")
    shoot(bob, screenshots, "store-not-found-desktop")
    # General access.
    page.check("input[value='ANYONE_WITH_ID_CAN_READ']")
    page.click("text=Save access")
    page.wait_for_selector("text=General access saved.")
    # Unname: the store will now expire, and the page says so.
    page.fill("#store-name-input", "")
    page.click("text=Save name")
    page.wait_for_selector("#expiry-badge")
    assert "Will be deleted in 7 days" in page.inner_text("#expiry-badge")
    each_variant(pages, screenshots, "settings", f"/stores/{store}/settings")


def test_api_tab_snippets_copy_and_run(pages: Any, live: LiveServer, screenshots: Path, tmp_path: Path) -> None:
    store = make_store(live, "browser-api", {"INPUT": (b'{"start": 1}', "application/json")})
    page = pages(permissions=["clipboard-read", "clipboard-write"])
    page.goto(f"/stores/{store}/api")
    urls = page.eval_on_selector_all(".ep-url", "els => els.map(e => e.textContent)")
    base = f"{live.url}/v2/key-value-stores/{store}"
    for expected in (base, f"{base}/keys", f"{base}/records", f"{base}/records/OUTPUT", f"{base}/grants"):
        assert expected in urls, expected
    page.click(f"button[data-copy='{base}/keys']")
    page.wait_for_selector(f"button[data-copy='{base}/keys']:has-text('Copied')")
    assert page.evaluate("navigator.clipboard.readText()") == f"{base}/keys"
    shoot(page, screenshots, "api-desktop")
    # The Python snippets run as they are against this server.
    env = {**os.environ, "KVBOX_TOKEN": live.admin_token}
    for snippet_id in ("snippet-apify", "snippet-kvbox"):
        code = page.inner_text(f"#{snippet_id}")
        proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)  # fmt: skip
        assert proc.returncode == 0, f"{snippet_id} failed:\n{code}\n{proc.stderr}"
        assert "hello" in proc.stdout and "INPUT" in proc.stdout, proc.stdout
    assert (tmp_path / "records.zip").stat().st_size > 0
    # And so do the curl commands (with the token in the environment).
    curl = page.locator("#endpoint-list li", has_text="List keys").locator("pre").text_content() or ""
    proc = subprocess.run(["bash", "-c", curl], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and '"key":"INPUT"' in proc.stdout, proc.stdout + proc.stderr
    each_variant(pages, screenshots, "api", f"/stores/{store}/api")


def test_delete_store_names_the_store(pages: Any, live: LiveServer, screenshots: Path) -> None:
    store = make_store(live, "browser-doomed", {"A": (b"1", "text/plain")})
    page = pages()
    page.goto(f"/stores/{store}")
    page.click(".store-head >> text=Delete")
    page.wait_for_selector("#confirm-delete")
    assert "Deleting browser-doomed removes it and all its 1 record" in page.inner_text("section.danger")
    page.fill("#confirm-delete", "browser-doome")
    page.click("text=Delete this store")
    page.wait_for_selector("text=Type 'browser-doomed' to confirm")
    page.fill("#confirm-delete", "browser-doomed")
    shoot(page, screenshots, "delete-store-desktop")
    page.click("text=Delete this store")
    page.wait_for_url(re.compile(r".*/stores$"))
    assert page.is_visible("text=Store 'browser-doomed' and all its records were deleted.")
    page.goto(f"/stores/{store}")
    assert "Store not found" in page.inner_text("h1")


def test_another_users_store_is_unreachable_by_url(pages: Any, live: LiveServer, screenshots: Path) -> None:
    store = make_store(live, "admin-private", {"SECRET": (b"classified", "text/plain")})
    bob = pages(token=live.bob_token)
    assert bob.locator("text=admin-private").count() == 0
    for path in (f"/stores/{store}", f"/stores/{store}/records/SECRET", f"/stores/{store}/settings"):
        bob.goto(path)
        assert "Store not found" in bob.inner_text("h1"), path
        assert "classified" not in bob.content()
    response = bob.goto(f"/stores/{store}/records/SECRET/raw")
    assert response is not None and response.status == 404


FFMPEG = "/usr/bin/ffmpeg"


def mp4_clip(path: Path) -> bytes:
    """An 8-second H.264 MP4 of a few MB (Debian's ffmpeg; the index first and a key frame every
    second, as web video is published), large enough that the player reads it in parts."""
    if not Path(FFMPEG).exists():
        pytest.fail(f"The video preview test needs Debian's ffmpeg at {FFMPEG}: apt-get install -y ffmpeg")
    subprocess.run(
        [FFMPEG, "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25:duration=8",
         "-c:v", "libx264", "-preset", "ultrafast", "-b:v", "6M", "-g", "25", "-pix_fmt", "yuv420p",
         "-movflags", "+faststart", "-y", str(path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return path.read_bytes()


def test_video_preview_seeks_with_range_requests(
    pages: Any, live: LiveServer, screenshots: Path, tmp_path: Path
) -> None:
    clip = mp4_clip(tmp_path / "clip.mp4")
    store = make_store(live, "browser-video", {"clip.mp4": (clip, "video/mp4")})
    page = pages()
    served: list[tuple[int, str, str]] = []  # status, Range asked for, Content-Range answered

    def seen(response: Any) -> None:
        if response.url.endswith("/records/clip.mp4/raw"):
            asked = response.request.headers.get("range", "")
            served.append((response.status, asked, response.headers.get("content-range", "")))

    page.on("response", seen)
    page.goto(f"/stores/{store}/records/clip.mp4")
    page.wait_for_function("document.getElementById('video-preview').readyState >= 1")
    duration = page.evaluate("document.getElementById('video-preview').duration")
    assert 7.5 < duration < 8.5
    landed = page.evaluate(
        """() => new Promise(resolve => {
            const video = document.getElementById('video-preview');
            video.addEventListener('seeked', () => resolve(video.currentTime), {once: true});
            video.currentTime = video.duration / 2;
        })"""
    )
    assert abs(landed - duration / 2) < 0.5
    page.wait_for_function("document.getElementById('video-preview').readyState >= 2")
    shoot(page, screenshots, "record-video-desktop")
    from_middle = [
        (status, asked, answered)
        for status, asked, answered in served
        if status == 206 and int(answered.removeprefix("bytes ").split("-")[0] or 0) > len(clip) // 3
    ]
    assert from_middle, served  # the player asked for the middle of the record, and got it as a 206
    assert all(status in (200, 206) for status, _, _ in served), served


def test_events_tab_follows_changes_and_manages_webhooks(pages: Any, live: LiveServer, screenshots: Path) -> None:
    store = make_store(live, "browser-events", {"first": (b"1", "text/plain")})
    page = pages()
    page.goto(f"/stores/{store}")
    page.click("nav.tabs >> text=Events")
    page.wait_for_url(re.compile(r".*/events$"))
    assert page.locator("#live-feed tr[data-sequence='1'] >> text=first").count() == 1
    # A write through the API shows up in the open page by itself.
    with live.api() as api:
        api.put(f"/v2/key-value-stores/{store}/records/second", content=b"22").raise_for_status()
    page.wait_for_selector("#live-feed tr[data-sequence='2'] >> text=second", timeout=10_000)
    assert page.locator("#live-feed tbody tr").first.get_attribute("data-sequence") == "2"
    # Webhooks: the server refuses internal addresses, and says so.
    page.fill("#webhook-url", "http://127.0.0.1:9/hook")
    page.click("#webhook-form >> text=Add webhook")
    page.wait_for_selector("text=is an internal address")
    page.fill("#webhook-url", "http://93.184.216.34/kvbox-hook")
    page.uncheck("input[name='event-RECORD.UPDATED']")
    page.fill("#webhook-prefix", "in-")
    page.click("#webhook-form >> text=Add webhook")
    page.wait_for_selector("text=signing secret (shown once)")
    hook = page.locator(".webhook")
    assert hook.count() == 1 and "93.184.216.34" in hook.inner_text() and "RECORD.UPDATED" not in hook.inner_text()
    shoot(page, screenshots, "events-desktop")
    hook.locator("text=Delete webhook").click()
    page.wait_for_selector("text=Webhook deleted.")
    assert page.locator(".webhook").count() == 0
    each_variant(pages, screenshots, "events", f"/stores/{store}/events")
