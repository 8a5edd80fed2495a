"""Stored HTML, SVG and other hostile content never runs in the console's origin (in-process)."""

from __future__ import annotations

import re

import pytest

from console.conftest import Console

pytestmark = pytest.mark.anyio

EVIL_HTML = (
    b"<html><body><h1>hi</h1><script>fetch('/stores', {method: 'POST'})</script>"
    b"<img src=x onerror=alert(1)></body></html>"
)
EVIL_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><script>alert(2)</script>'
    b'<rect width="10" height="10"/></svg>'
)


async def store_with(console: Console, records: dict[str, tuple[bytes, str]]) -> str:
    r = await console.post("/stores", {"name": "hostile"})
    store = r.headers["location"].rsplit("/", 1)[-1]
    for key, (body, ctype) in records.items():
        assert (await console.upload(store, key, body, ctype)).status_code == 201, key
    return store


async def test_uploaded_html_is_served_only_as_a_sandboxed_document(console: Console) -> None:
    await console.sign_in()
    store = await store_with(console, {"page": (EVIL_HTML, "text/html; charset=utf-8")})
    raw = await console.get(f"/stores/{store}/records/page/raw")
    assert raw.status_code == 200 and raw.content == EVIL_HTML
    csp = raw.headers["content-security-policy"]
    assert csp.startswith("sandbox;") and "allow-scripts" not in csp and "allow-same-origin" not in csp
    assert "default-src 'none'" in csp
    assert raw.headers["x-content-type-options"] == "nosniff"
    # Download links force an attachment.
    download = await console.get(f"/stores/{store}/records/page/raw?download=1")
    assert download.headers["content-disposition"].startswith("attachment;")


async def test_html_preview_is_escaped_source_or_a_sandboxed_frame(console: Console) -> None:
    await console.sign_in()
    store = await store_with(console, {"page": (EVIL_HTML, "text/html")})
    source = (await console.get(f"/stores/{store}/records/page")).text
    assert "&lt;script&gt;fetch(" in source
    assert "<script>fetch" not in source and "onerror=alert" not in source.replace("onerror=alert(1)&gt;", "")
    framed = (await console.get(f"/stores/{store}/records/page?as=frame")).text
    frames = re.findall(r"<iframe[^>]*>", framed)
    assert len(frames) == 1
    assert 'sandbox=""' in frames[0] and f'src="/stores/{store}/records/page/raw"' in frames[0]
    assert "<script>fetch" not in framed
    # The only scripts a console page runs are its own file; inline script is forbidden by CSP.
    scripts = re.findall(r"<script[^>]*>", framed)
    assert scripts == [s for s in scripts if 'src="/static/console.js?v=' in s]
    policy = (await console.get(f"/stores/{store}/records/page?as=frame")).headers["content-security-policy"]
    assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy.split("script-src")[1].split(";")[0]


async def test_svg_is_shown_as_an_image_and_served_sandboxed(console: Console) -> None:
    await console.sign_in()
    store = await store_with(console, {"logo": (EVIL_SVG, "image/svg+xml")})
    page = (await console.get(f"/stores/{store}/records/logo")).text
    assert f'<img src="/stores/{store}/records/logo/raw"' in page
    assert "onload=" not in page and "<svg" not in page
    raw = await console.get(f"/stores/{store}/records/logo/raw")
    assert raw.headers["content-security-policy"].startswith("sandbox;")


async def test_hostile_keys_content_types_and_json_are_escaped(console: Console) -> None:
    await console.sign_in()
    store = await store_with(console, {
        "it's(1)": (b"x", 'text/plain; note="<script>alert(1)</script>"'),
        "json": (b'{"<img src=x onerror=alert(1)>": "</script><script>alert(2)</script>"}', "application/json"),
    })  # fmt: skip
    listing = (await console.get(f"/stores/{store}")).text
    assert "<script>alert" not in listing
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in listing
    assert 'data-key="it&#39;s(1)"' in listing
    page = (await console.get(f"/stores/{store}/records/json")).text
    assert "<img src=x" not in page and "<script>alert(2)" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


async def test_a_sandboxed_frame_cannot_post_to_the_console(console: Console) -> None:
    """A form or fetch from the sandboxed record has the origin "null": refused even with a token."""
    await console.sign_in()
    r = await console.post("/stores", {"name": "from-frame"}, headers={"origin": "null"})
    assert r.status_code == 403
    assert "from-frame" not in (await console.get("/stores")).text
