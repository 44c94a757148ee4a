"""The PII cipher of services.order.pii: AES-GCM with key ids, rotation and a blind index."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.exceptions import InvalidTag
from hypothesis import given, settings
from hypothesis import strategies as st

from services.order.pii import PiiCipher, PiiKeyError, generate_key

K1 = base64.urlsafe_b64encode(bytes(range(32))).decode()
K2 = base64.urlsafe_b64encode(bytes(range(32, 64))).decode()


@pytest.fixture
def cipher() -> PiiCipher:
    return PiiCipher(f"main:{K1}")


# -- round trip --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "zhang.wei@example.com",
        "张伟",
        "上海市浦东新区世纪大道100号 8楼",
        "+86 138 0013 8000",
        "",
        "emoji 📦 and \u00e9",
    ],
)
def test_round_trip(cipher: PiiCipher, value: str) -> None:
    token = cipher.encrypt(value, "email")
    assert token is not None
    assert cipher.decrypt(token, "email") == value


@settings(max_examples=50, deadline=None)
@given(st.text())
def test_round_trip_any_text(value: str) -> None:
    cipher = PiiCipher(f"main:{K1}")
    assert cipher.decrypt(cipher.encrypt(value, "street"), "street") == value


def test_none_passes_through(cipher: PiiCipher) -> None:
    assert cipher.encrypt(None, "phone") is None
    assert cipher.decrypt(None, "phone") is None
    assert cipher.needs_rotation(None) is False


def test_token_format_names_version_and_key(cipher: PiiCipher) -> None:
    token = cipher.encrypt("a@b.example", "email")
    assert token is not None
    version, kid, blob = token.split(".", 2)
    assert (version, kid) == ("v1", "main")
    assert cipher.key_id(token) == "main"
    # 12-byte nonce + ciphertext + 16-byte tag
    assert len(base64.b64decode(blob)) == 12 + len("a@b.example") + 16


def test_ciphertext_hides_the_plaintext_and_is_randomised(cipher: PiiCipher) -> None:
    value = "zhang.wei@example.com"
    tokens = {cipher.encrypt(value, "email") for _ in range(20)}
    assert len(tokens) == 20  # a fresh nonce each time
    for token in tokens:
        assert token is not None
        assert value not in token
        assert value.encode() not in base64.b64decode(token.split(".", 2)[2])
    nonces = {base64.b64decode(t.split(".", 2)[2])[:12] for t in tokens if t}
    assert len(nonces) == 20


def test_ciphertext_is_bound_to_its_field(cipher: PiiCipher) -> None:
    token = cipher.encrypt("zhang.wei@example.com", "email")
    with pytest.raises(InvalidTag):
        cipher.decrypt(token, "phone")
    assert cipher.decrypt(token, "email") == "zhang.wei@example.com"


@pytest.mark.parametrize("position", [0, 5, 11, 12, 20, -1])
def test_one_flipped_byte_fails(cipher: PiiCipher, position: int) -> None:
    token = cipher.encrypt("zhang.wei@example.com", "email")
    assert token is not None
    version, kid, blob = token.split(".", 2)
    data = bytearray(base64.b64decode(blob))
    data[position] ^= 0x01
    tampered = f"{version}.{kid}.{base64.b64encode(bytes(data)).decode()}"
    with pytest.raises(InvalidTag):
        cipher.decrypt(tampered, "email")


def test_a_value_from_another_key_with_the_same_kid_fails() -> None:
    token = PiiCipher(f"main:{K1}").encrypt("x", "email")
    with pytest.raises(InvalidTag):
        PiiCipher(f"main:{K2}").decrypt(token, "email")


@pytest.mark.parametrize("token", ["plain text", "v2.main.AAAA", "v1.main", ""])
def test_not_an_encrypted_value(cipher: PiiCipher, token: str) -> None:
    with pytest.raises(PiiKeyError):
        cipher.decrypt(token, "email")


# -- rotation ----------------------------------------------------------------------------


def test_rotation_keyring_reads_old_values_and_writes_new_ones() -> None:
    old = PiiCipher(f"old:{K1}")
    old_token = old.encrypt("张伟 <zhang.wei@example.com>", "email")
    assert old_token is not None

    ring = PiiCipher(f"new:{K2},old:{K1}")
    assert ring.active_kid == "new"
    assert ring.decrypt(old_token, "email") == "张伟 <zhang.wei@example.com>"
    assert ring.needs_rotation(old_token) is True
    assert ring.key_id(old_token) == "old"

    new_token = ring.encrypt("张伟 <zhang.wei@example.com>", "email")
    assert new_token is not None
    assert ring.key_id(new_token) == "new"
    assert ring.needs_rotation(new_token) is False
    assert ring.decrypt(new_token, "email") == "张伟 <zhang.wei@example.com>"
    # Only K2 can read the new value: the old deployment cannot.
    with pytest.raises(PiiKeyError):
        old.decrypt(new_token, "email")
    assert PiiCipher(f"new:{K2}").decrypt(new_token, "email") == "张伟 <zhang.wei@example.com>"


def test_single_bare_key_gets_a_derived_kid() -> None:
    bare = PiiCipher(K1)
    token = bare.encrypt("x", "email")
    assert token is not None
    assert bare.active_kid == PiiCipher(f" {K1} ").active_kid  # stable, whitespace-tolerant
    assert bare.active_kid != PiiCipher(K2).active_kid
    assert bare.decrypt(token, "email") == "x"
    # Keeping the bare key in the ring (unnamed) keeps its values readable.
    ring = PiiCipher(f"new:{K2},{K1}")
    assert ring.decrypt(token, "email") == "x"
    assert ring.needs_rotation(token)


def test_rotation_from_a_bare_key_to_a_named_keyring() -> None:
    token = PiiCipher(K1).encrypt("zhang.wei@example.com", "email")
    ring = PiiCipher(f"new:{K2},old:{K1}")
    assert ring.decrypt(token, "email") == "zhang.wei@example.com"


def test_a_key_id_with_a_dot_is_rejected_or_round_trips() -> None:
    try:
        cipher = PiiCipher(f"2024.05:{K1}")
    except PiiKeyError:
        return
    token = cipher.encrypt("x", "email")
    assert cipher.decrypt(token, "email") == "x"


def test_unknown_key_raises_pii_key_error() -> None:
    token = PiiCipher(f"gone:{K1}").encrypt("x", "email")
    assert token is not None
    ring = PiiCipher(f"new:{K2}")
    with pytest.raises(PiiKeyError, match="gone"):
        ring.decrypt(token, "email")
    assert ring.needs_rotation(token) is True


# -- malformed keys ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "keyring",
    [
        pytest.param("", id="empty"),
        pytest.param("   ", id="blank"),
        pytest.param(" , ,", id="only-commas"),
        pytest.param("not base64!!", id="not-base64"),
        pytest.param("k:not base64!!", id="named-not-base64"),
        pytest.param("k:é" + K1[1:], id="non-ascii"),
        pytest.param(base64.b64encode(os.urandom(16)).decode(), id="16-bytes"),
        pytest.param(base64.b64encode(os.urandom(31)).decode(), id="31-bytes"),
        pytest.param(base64.b64encode(os.urandom(33)).decode(), id="33-bytes"),
        pytest.param(f"k:{K1},k:{K2}", id="duplicate-kid"),
        pytest.param(f"{K1},{K1}", id="duplicate-bare-key"),
        pytest.param(f"k:{K1},x:", id="missing-material"),
    ],
)
def test_malformed_keys_raise_pii_key_error(keyring: str) -> None:
    with pytest.raises(PiiKeyError):
        PiiCipher(keyring)


def test_pii_key_error_is_a_value_error() -> None:
    assert issubclass(PiiKeyError, ValueError)


def test_standard_and_unpadded_base64_keys_are_accepted() -> None:
    raw = bytes(range(100, 132))
    standard = base64.b64encode(raw).decode()
    unpadded = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    token = PiiCipher(f"k:{standard}").encrypt("x", "email")
    assert PiiCipher(f"k:{unpadded}").decrypt(token, "email") == "x"


# -- blind index -------------------------------------------------------------------------


def test_blind_index_ignores_case_and_surrounding_whitespace(cipher: PiiCipher) -> None:
    index = cipher.email_index("zhang.wei@example.com")
    assert cipher.email_index("  Zhang.Wei@EXAMPLE.com\n") == index
    assert cipher.email_index("zhang.wei@example.org") != index
    assert len(index) == 64 and int(index, 16) >= 0
    assert "zhang" not in index


def test_blind_index_differs_per_key() -> None:
    a = PiiCipher(f"a:{K1}").email_index("zhang.wei@example.com")
    b = PiiCipher(f"b:{K2}").email_index("zhang.wei@example.com")
    assert a != b
    # It depends on the key material, not the key id.
    assert PiiCipher(f"other:{K1}").email_index("zhang.wei@example.com") == a


def test_email_indexes_lists_one_per_key_active_first() -> None:
    ring = PiiCipher(f"new:{K2},old:{K1}")
    email = "Zhang.Wei@example.com"
    indexes = ring.email_indexes(email)
    assert indexes == [
        PiiCipher(f"new:{K2}").email_index(email),
        PiiCipher(f"old:{K1}").email_index(email),
    ]
    assert indexes[0] == ring.email_index(email)
    assert len(set(indexes)) == 2


# -- key generation ----------------------------------------------------------------------


def test_generate_key_yields_a_usable_key() -> None:
    key = generate_key()
    assert len(base64.urlsafe_b64decode(key)) == 32
    assert generate_key() != key
    cipher = PiiCipher(key)
    assert cipher.decrypt(cipher.encrypt("张伟", "name"), "name") == "张伟"
    named = PiiCipher(f"k1:{key},k0:{generate_key()}")
    assert named.decrypt(named.encrypt("x", "email"), "email") == "x"
