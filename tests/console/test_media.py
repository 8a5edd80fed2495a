"""Audio and video records in the console (in-process): a player on the record page, and raw
bytes served in ranges, as players ask for them when they seek."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest

from conftest import ALICE_TOKEN
from console.conftest import Console

pytestmark = pytest.mark.anyio

CLIP = bytes(range(256)) * 40  # 10 KiB: a blob (the fixture inlines up to 1 KiB)


async def store_with(console: Console, records: dict[str, tuple[bytes, str]]) -> str:
    r = await console.post("/stores", {"name": "media"})
    store = r.headers["location"].rsplit("/", 1)[-1]
    for key, (body, ctype) in records.items():
        assert (await console.upload(store, key, body, ctype)).status_code == 201, key
    return store


async def test_video_and_audio_get_a_player(console: Console) -> None:
    await console.sign_in()
    store = await store_with(console, {"clip": (CLIP, "video/mp4"), "song": (CLIP, "audio/mpeg")})
    page = await console.get(f"/stores/{store}/records/clip")
    assert f'<video controls preload="metadata" src="/stores/{store}/records/clip/raw"' in page.text
    assert "media-src 'self'" in page.headers["content-security-policy"]
    song = (await console.get(f"/stores/{store}/records/song")).text
    assert f'<audio controls preload="metadata" src="/stores/{store}/records/song/raw"' in song


async def test_raw_bytes_are_served_in_ranges(console: Console) -> None:
    await console.sign_in()
    store = await store_with(console, {"clip": (CLIP, "video/mp4")})
    raw = f"/stores/{store}/records/clip/raw"
    whole = await console.get(raw)
    assert whole.status_code == 200 and whole.content == CLIP
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-length"] == str(len(CLIP))
    middle = await console.get(raw, headers={"Range": "bytes=5000-"})
    assert middle.status_code == 206 and middle.content == CLIP[5000:]
    assert middle.headers["content-range"] == f"bytes 5000-{len(CLIP) - 1}/{len(CLIP)}"
    assert middle.headers["content-security-policy"].startswith("sandbox;")
    resumed = await console.get(raw, headers={"Range": "bytes=0-99", "If-Range": whole.headers["etag"]})
    assert resumed.status_code == 206 and resumed.content == CLIP[:100]
    stale = await console.get(raw, headers={"Range": "bytes=0-99", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == CLIP
    past = await console.get(raw, headers={"Range": f"bytes={len(CLIP)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(CLIP)}"


async def test_a_compressed_record_is_sent_decoded_and_whole(console: Console) -> None:
    await console.sign_in()
    store = await store_with(console, {})
    key = "song"
    r = await console.services.records.put(
        await console.services.auth.authenticate(ALICE_TOKEN),
        store,
        key,
        body=_one(gzip.compress(CLIP)),
        content_type="audio/wav",
        content_encoding="gzip",
        content_length=None,
    )
    assert r[1].encoding == "gzip"
    sent = await console.get(f"/stores/{store}/records/{key}/raw", headers={"Range": "bytes=0-9"})
    assert sent.status_code == 200 and sent.content == CLIP and "accept-ranges" not in sent.headers


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data
