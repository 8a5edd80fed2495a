"""Timestamps as the API writes them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from kvbox.core.clock import iso_ms

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.integers(min_value=0, max_value=253_402_300_799_999))  # up to 9999-12-31T23:59:59.999Z
def test_iso_ms_agrees_with_datetime_for_any_instant(ms: int) -> None:
    expected = (EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert iso_ms(ms) == expected


def test_iso_ms_pads_milliseconds() -> None:
    assert iso_ms(1_764_000_000_007) == "2025-11-24T16:00:00.007Z"
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z"
