"""Signed URLs: the contract's test vectors, expiry, tampering, and agreement with apify-client."""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import pytest
from apify_client._utils.crypto import create_hmac_signature, create_storage_content_signature, encode_base62
from hypothesis import given
from hypothesis import strategies as st

from kvbox.core.signatures import (
    BASE62,
    RecordSigner,
    base62,
    hmac_base62,
    sign_record,
    sign_storage,
    verify_record,
    verify_storage,
)

VECTOR_NO_EXPIRY = "MC4wLjNUd2ZFRTY1OXVmU05zbVM0N2xS"
VECTOR_EXPIRING = "MC4xNzY3MjI1NjAwMDAwLjFSRUVoWjJzVjd6ZGxrWm92RlFIUw=="
VECTOR_EXPIRES_AT = 1_767_225_600_000

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=80)
store_ids = st.text(alphabet=BASE62, min_size=1, max_size=40)


def _b64(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode()).decode()


# --- contract vectors ------------------------------------------------------------------


def test_record_signature_vector() -> None:
    assert sign_record("custom-signing-key", "some_key") == "1B7YhghOY5y8e7QFKffgE"
    assert verify_record("custom-signing-key", "some_key", "1B7YhghOY5y8e7QFKffgE")


def test_storage_signature_vector_without_expiry() -> None:
    assert hmac_base62("hmac-secret-key", "0.0.resource-id") == "3TwfEE659ufSNsmS47lR"
    assert sign_storage("hmac-secret-key", "resource-id") == VECTOR_NO_EXPIRY
    assert verify_storage("hmac-secret-key", "resource-id", VECTOR_NO_EXPIRY, now_ms=10**15)


def test_storage_signature_vector_with_expiry_is_emitted_unpadded() -> None:
    signed = sign_storage("my-secret", "WkzbQMuFYuamGv3YF", expires_at_ms=VECTOR_EXPIRES_AT)
    assert signed == VECTOR_EXPIRING.rstrip("=")
    assert base64.urlsafe_b64decode(VECTOR_EXPIRING).decode() == "0.1767225600000.1REEhZ2sV7zdlkZovFQHS"


@pytest.mark.parametrize("form", [VECTOR_EXPIRING, VECTOR_EXPIRING.rstrip("=")], ids=["padded", "unpadded"])
def test_both_base64_padding_forms_are_accepted(form: str) -> None:
    assert verify_storage("my-secret", "WkzbQMuFYuamGv3YF", form, now_ms=VECTOR_EXPIRES_AT - 1)


def test_expiry_is_honoured_to_the_millisecond() -> None:
    assert verify_storage("my-secret", "WkzbQMuFYuamGv3YF", VECTOR_EXPIRING, now_ms=VECTOR_EXPIRES_AT - 1)
    assert not verify_storage("my-secret", "WkzbQMuFYuamGv3YF", VECTOR_EXPIRING, now_ms=VECTOR_EXPIRES_AT)
    assert not verify_storage("my-secret", "WkzbQMuFYuamGv3YF", VECTOR_EXPIRING, now_ms=VECTOR_EXPIRES_AT + 1)


def test_a_signature_without_expiry_never_expires() -> None:
    assert verify_storage("hmac-secret-key", "resource-id", VECTOR_NO_EXPIRY, now_ms=2**62)


# --- tampering -------------------------------------------------------------------------


def test_record_signature_is_bound_to_key_and_secret() -> None:
    sig = sign_record("secret", "INPUT")
    assert not verify_record("secret", "OUTPUT", sig)
    assert not verify_record("other", "INPUT", sig)
    assert not verify_record("secret", "INPUT", sig[:-1])
    assert not verify_record("secret", "INPUT", "")


def test_storage_signature_is_bound_to_store_and_secret() -> None:
    assert not verify_storage("my-secret", "otherStoreId00000", VECTOR_EXPIRING, now_ms=0)
    assert not verify_storage("other-secret", "WkzbQMuFYuamGv3YF", VECTOR_EXPIRING, now_ms=0)


@pytest.mark.parametrize(
    "signature",
    [
        _b64("0.9999999999999.1REEhZ2sV7zdlkZovFQHS"),  # expiry pushed later, HMAC kept
        _b64("1.1767225600000.1REEhZ2sV7zdlkZovFQHS"),  # other version
        _b64("0.1767225600000.1REEhZ2sV7zdlkZovFQHT"),  # HMAC changed
        _b64("0.1767225600000"),  # two parts
        _b64("0.1767225600000.1REEhZ2sV7zdlkZovFQHS.x"),  # four parts
        _b64("0.-1.1REEhZ2sV7zdlkZovFQHS"),  # negative expiry
        _b64("0.soon.1REEhZ2sV7zdlkZovFQHS"),  # non-integer expiry
        "!!!not-base64!!!",
        "",
        "=",
        "A" * 500,
    ],
)
def test_tampered_or_malformed_storage_signatures_are_refused(signature: str) -> None:
    assert not verify_storage("my-secret", "WkzbQMuFYuamGv3YF", signature, now_ms=0)


@given(st.integers(min_value=0, max_value=len(VECTOR_EXPIRING.rstrip("=")) - 1), st.sampled_from(BASE62))
def test_changing_any_character_of_a_storage_signature_breaks_it(at: int, char: str) -> None:
    sig = VECTOR_EXPIRING.rstrip("=")
    tampered = sig[:at] + char + sig[at + 1 :]
    valid = verify_storage("my-secret", "WkzbQMuFYuamGv3YF", tampered, now_ms=0)
    # Base64 may decode two strings to the same bytes only by changing the unused low bits of the last char.
    same_bytes = base64.urlsafe_b64decode(tampered + "==") == base64.urlsafe_b64decode(sig + "==")
    assert valid == same_bytes


# --- agreement with the official client --------------------------------------------------


def _base62_decode(s: str) -> int:
    n = 0
    for c in s:
        n = n * 62 + BASE62.index(c)
    return n


@given(st.integers(min_value=0, max_value=2**130))
def test_base62_matches_the_client_and_round_trips(n: int) -> None:
    assert base62(n) == encode_base62(n)
    assert _base62_decode(base62(n)) == n


@given(secret=text, message=text)
def test_hmac_base62_matches_the_client(secret: str, message: str) -> None:
    assert hmac_base62(secret, message) == create_hmac_signature(secret, message)


@given(secret=text, key=st.text(alphabet=BASE62 + "!-_.'()", min_size=1, max_size=256))
def test_record_signatures_match_the_client(secret: str, key: str) -> None:
    client_sig = create_hmac_signature(secret, key)
    assert sign_record(secret, key) == client_sig
    assert verify_record(secret, key, client_sig)


@given(secret=text, store_id=store_ids)
def test_permanent_storage_signatures_match_the_client(secret: str, store_id: str) -> None:
    client_sig = create_storage_content_signature(store_id, secret)
    assert sign_storage(secret, store_id) == client_sig.rstrip("=")
    assert verify_storage(secret, store_id, client_sig, now_ms=2**62)
    assert verify_storage(secret, store_id, client_sig.rstrip("="), now_ms=2**62)


@given(secret=text, store_id=store_ids, minutes=st.integers(min_value=1, max_value=60 * 24 * 30))
def test_expiring_client_signatures_verify_until_they_expire(secret: str, store_id: str, minutes: int) -> None:
    before = int(time.time() * 1000)
    client_sig = create_storage_content_signature(store_id, secret, expires_in=timedelta(minutes=minutes))
    expires_at = int(base64.urlsafe_b64decode(client_sig).decode().split(".")[1])
    assert before + minutes * 60_000 <= expires_at
    assert verify_storage(secret, store_id, client_sig, now_ms=expires_at - 1)
    assert not verify_storage(secret, store_id, client_sig, now_ms=expires_at)
    assert not verify_storage(secret, store_id + "x", client_sig, now_ms=before)


@given(secret=st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=200), key=text)
def test_the_listing_signer_agrees_with_the_client_for_any_secret_and_key(secret: str, key: str) -> None:
    """Key listings sign with `RecordSigner` (HMAC built from hash states); secrets longer
    than a hash block are hashed first, as HMAC says."""
    assert RecordSigner(secret).sign(key) == create_hmac_signature(secret, key) == sign_record(secret, key)
