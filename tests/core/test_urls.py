"""Record and store URLs: one path segment each, escaped exactly as urllib would."""

from __future__ import annotations

from urllib.parse import quote, unquote

from hypothesis import given
from hypothesis import strategies as st

from kvbox.core.urls import key_segment, record_path, record_url, store_segment


@given(st.text() | st.text(alphabet="aZ09!'()*-_.~/ %"))
def test_segments_escape_as_quote_does(text: str) -> None:
    assert key_segment(text) == quote(text, safe="!'()")
    assert store_segment(text) == quote(text, safe="~")


@given(st.text(min_size=1))
def test_a_key_is_one_segment_that_decodes_back(key: str) -> None:
    segment = key_segment(key)
    assert "/" not in segment and "?" not in segment
    assert unquote(segment) == key


def test_record_urls() -> None:
    assert record_path("~my-store", "a/b") == "/v2/key-value-stores/~my-store/records/a%2Fb"
    assert (
        record_url("http://h:1/", "s1", "k", signature="sig")
        == "http://h:1/v2/key-value-stores/s1/records/k?signature=sig"
    )
    assert record_url("http://h:1", "s1", "it's(1)!") == "http://h:1/v2/key-value-stores/s1/records/it's(1)!"
