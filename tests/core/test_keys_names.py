"""Record key and store name rules: exact alphabets, length limits and the error raised."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kvbox.core.errors import InvalidRecordKeyError, InvalidStoreNameError
from kvbox.core.keys import MAX_KEY_LENGTH, is_valid_key, validate_key
from kvbox.core.names import MAX_STORE_NAME_LENGTH, is_valid_store_name, validate_store_name

KEY_ALPHABET = string.ascii_letters + string.digits + "!-_.'()"
NAME_EDGE = string.ascii_letters + string.digits
NAME_ALPHABET = NAME_EDGE + "-"

valid_keys = st.text(alphabet=KEY_ALPHABET, min_size=1, max_size=MAX_KEY_LENGTH)
foreign_chars = st.characters(exclude_characters=KEY_ALPHABET, exclude_categories=["Cs"])


@st.composite
def valid_names(draw: st.DrawFn) -> str:
    first = draw(st.sampled_from(NAME_EDGE))
    if draw(st.booleans()):
        return first
    middle = draw(st.text(alphabet=NAME_ALPHABET, max_size=MAX_STORE_NAME_LENGTH - 2))
    return first + middle + draw(st.sampled_from(NAME_EDGE))


@st.composite
def with_inserted(draw: st.DrawFn, base: st.SearchStrategy[str], chars: st.SearchStrategy[str]) -> str:
    text = draw(base)
    at = draw(st.integers(min_value=0, max_value=len(text)))
    return text[:at] + draw(chars) + text[at:]


# --- record keys -----------------------------------------------------------------------


@given(valid_keys)
def test_every_key_of_the_allowed_alphabet_up_to_256_chars_is_accepted(key: str) -> None:
    assert validate_key(key) == key
    assert is_valid_key(key)


@given(with_inserted(st.text(alphabet=KEY_ALPHABET, max_size=100), foreign_chars))
def test_a_key_with_any_other_character_is_rejected(key: str) -> None:
    assert not is_valid_key(key)
    with pytest.raises(InvalidRecordKeyError) as exc:
        validate_key(key)
    assert exc.value.status == 400
    assert exc.value.type == "invalid-record-key"


@given(st.text(alphabet=KEY_ALPHABET, min_size=MAX_KEY_LENGTH + 1, max_size=MAX_KEY_LENGTH + 300))
def test_a_key_longer_than_256_chars_is_rejected(key: str) -> None:
    assert not is_valid_key(key)
    with pytest.raises(InvalidRecordKeyError, match="too long"):
        validate_key(key)


@pytest.mark.parametrize(
    "key",
    ["INPUT", "OUTPUT", "__STORAGE_ALIASES_MAPPING", "SDK_CRAWLER_STATISTICS_0", "a", "-", "it's(1)!", "x" * 256],
)
def test_known_good_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "a/b", "a\\b", "a b", "a*", "a~b", "a#b", "a?b", "a&b", "{a}", "ключ", "a\n", "\na", "a\x00", "x" * 257],
)
def test_known_bad_keys(key: str) -> None:
    with pytest.raises(InvalidRecordKeyError):
        validate_key(key)


# --- store names -----------------------------------------------------------------------


@given(valid_names())
def test_every_name_of_the_allowed_alphabet_up_to_63_chars_is_accepted(name: str) -> None:
    assert len(name) <= MAX_STORE_NAME_LENGTH
    assert validate_store_name(name) == name
    assert is_valid_store_name(name)


@given(
    with_inserted(
        st.text(alphabet=NAME_EDGE, min_size=1, max_size=30),
        st.characters(exclude_characters=NAME_ALPHABET, exclude_categories=["Cs"]),
    )
)
def test_a_name_with_any_other_character_is_rejected(name: str) -> None:
    assert not is_valid_store_name(name)
    with pytest.raises(InvalidStoreNameError) as exc:
        validate_store_name(name)
    assert exc.value.status == 400
    assert exc.value.type == "invalid-value"


@given(st.text(alphabet=NAME_EDGE, min_size=MAX_STORE_NAME_LENGTH + 1, max_size=200))
def test_a_name_longer_than_63_chars_is_rejected(name: str) -> None:
    assert not is_valid_store_name(name)
    with pytest.raises(InvalidStoreNameError, match="too long"):
        validate_store_name(name)


@given(valid_names(), st.sampled_from(["start", "end"]))
def test_a_name_may_not_start_or_end_with_a_hyphen(name: str, where: str) -> None:
    bad = "-" + name if where == "start" else name + "-"
    with pytest.raises(InvalidStoreNameError):
        validate_store_name(bad[:MAX_STORE_NAME_LENGTH] if where == "start" else bad[-MAX_STORE_NAME_LENGTH:])


@pytest.mark.parametrize("name", ["a", "my-store", "API-test-permissions-xyz", "x" * 63, "0-0"])
def test_known_good_names(name: str) -> None:
    assert validate_store_name(name) == name


@pytest.mark.parametrize("name", ["", "-a", "a-", "-", "my_store", "my.store", "my store", "a~b", "x" * 64, "a\n"])
def test_known_bad_names(name: str) -> None:
    with pytest.raises(InvalidStoreNameError):
        validate_store_name(name)
