"""Markers shared by every layer."""

from __future__ import annotations

from typing import Final


class Unset:
    """The type of `UNSET`: "leave this field as it is" in partial updates, where None clears it."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset()
