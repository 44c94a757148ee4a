"""Console sign-in rules without I/O: password hashes, TOTP, recovery codes, lock-out, cookies."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from services.console.domain import (
    Forbidden,
    Role,
    hash_password,
    new_totp_secret,
    password_matches,
    require_action,
    totp_matches,
)
from services.console.i18n import WORDS, translator
from services.console.sessions import Session, SessionCodec
from services.console.store import new_user

pytestmark = pytest.mark.unit
NOW = datetime(2026, 12, 3, 8, 0, tzinfo=UTC)


def test_passwords_are_argon2_hashed_and_checked():
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert password_matches(stored, "correct horse")
    assert not password_matches(stored, "correct hors")
    assert not password_matches("not a hash", "correct horse")


def test_totp_accepts_the_current_step_and_its_neighbours_only():
    secret = new_totp_secret()
    totp = pyotp.TOTP(secret)
    assert totp_matches(secret, totp.at(NOW), NOW)
    assert totp_matches(secret, totp.at(NOW - timedelta(seconds=30)), NOW)
    assert not totp_matches(secret, totp.at(NOW - timedelta(minutes=5)), NOW)
    assert not totp_matches(secret, "12345", NOW)
    assert not totp_matches(secret, "abcdef", NOW)


def test_recovery_codes_work_once_and_only_their_digests_are_kept():
    user = new_user("Ops@Example.com", Role.OPERATOR, hash_password("pw"))
    assert user.email == "ops@example.com"
    codes = user.enrol(new_totp_secret())
    assert len(codes) == 10 and len(set(codes)) == 10
    assert not any(c in user.recovery_digests for c in codes)
    assert user.second_factor_matches(codes[3].upper(), NOW)
    assert not user.second_factor_matches(codes[3], NOW)  # spent
    assert len(user.recovery_digests) == 9


def test_five_failures_lock_the_user_for_fifteen_minutes_then_the_count_starts_again():
    user = new_user("a@example.com", Role.VIEWER, "x")
    lockout = timedelta(minutes=15)
    assert [user.record_failure(NOW, 5, lockout) for _ in range(5)] == [False] * 4 + [True]
    assert user.locked(NOW + timedelta(minutes=14, seconds=59))
    assert not user.locked(NOW + lockout)
    assert not user.record_failure(NOW + lockout, 5, lockout)
    assert user.failed_attempts == 1 and user.locked_until is None
    user.record_success()
    assert user.failed_attempts == 0


def test_only_operators_and_admins_may_act():
    assert [r.can_act for r in Role] == [False, True, True]
    with pytest.raises(Forbidden):
        require_action(Role.VIEWER)
    require_action(Role.OPERATOR)


def test_session_cookies_are_signed_and_expire():
    codec = SessionCodec("k" * 32, max_age_s=60)
    session = Session()
    session.sign_in("usr_1", 0)
    raw = codec.dumps(session)
    back = codec.loads(raw)
    assert back.uid == "usr_1" and back.csrf == session.csrf and not back.changed
    assert codec.loads(raw[:-2] + "xx").uid is None  # tampered
    assert SessionCodec("other" * 8, 60).loads(raw).uid is None  # another key
    assert codec.loads(None).uid is None
    expired = SessionCodec("k" * 32, max_age_s=60)
    expired.max_age_s = -1
    assert expired.loads(raw).uid is None


def test_csrf_token_must_match_and_changes_on_sign_in():
    session = Session()
    token = session.csrf
    assert session.csrf_ok(token)
    assert not session.csrf_ok(None) and not session.csrf_ok("") and not session.csrf_ok("x")
    session.sign_in("usr_1", 0)
    assert session.csrf != token and not session.csrf_ok(token)


def test_every_word_has_english_and_chinese():
    assert all(en and zh and en != zh for en, zh in WORDS.values())
    assert translator("zh")("orders") == "订单"
    assert translator("en")("orders") == "Orders"
    assert translator("zh")("no-such-key") == "no-such-key"


def test_a_totp_code_is_accepted_once_and_never_an_older_one_after_it():
    user = new_user("r@example.com", Role.OPERATOR, "x")
    secret = new_totp_secret()
    user.enrol(secret)
    totp = pyotp.TOTP(secret)
    assert user.second_factor_matches(totp.at(NOW), NOW)
    assert not user.second_factor_matches(totp.at(NOW), NOW)  # replayed
    assert not user.second_factor_matches(totp.at(NOW - timedelta(seconds=30)), NOW)
    assert user.second_factor_matches(totp.at(NOW + timedelta(seconds=30)), NOW)


def test_signing_in_is_a_fresh_second_factor_check_carried_by_the_signed_cookie():
    codec = SessionCodec("k" * 32, max_age_s=60)
    session = Session()
    assert session.verified_at == 0.0  # never checked: key operations ask for a code
    before = time.time()
    session.sign_in("usr_1", 0)
    assert session.verified_at >= before
    assert codec.loads(codec.dumps(session)).verified_at == session.verified_at
    session.sign_out()
    assert session.verified_at == 0.0
