"""Console users: roles, password and TOTP checks, recovery codes and lock-out. No I/O."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()
ISSUER = "Dropship console"
LOCALES = ("en", "zh")


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def can_act(self) -> bool:
        """Operators and admins change things; viewers only look."""
        return self is not Role.VIEWER

    @property
    def can_manage_users(self) -> bool:
        """Only admins add console users, change their roles and unlock them."""
        return self is Role.ADMIN


class ConsoleError(Exception):
    """Root of the console's own errors."""


class Forbidden(ConsoleError):
    """The signed-in user's role may not do this."""


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(stored_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def new_password() -> str:
    return secrets.token_urlsafe(12)


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=ISSUER)


def totp_step(secret: str, code: str, at: datetime | None = None) -> int | None:
    """The 30-second step (this one or a neighbour, for clock drift) whose code this is."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    now = int((at or datetime.now(UTC)).timestamp()) // totp.interval
    for step in (now - 1, now, now + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def totp_matches(secret: str, code: str, at: datetime | None = None) -> bool:
    return totp_step(secret, code, at) is not None


def _digest(code: str) -> str:
    return hashlib.sha256(code.strip().lower().replace("-", "").encode()).hexdigest()


def new_recovery_codes(count: int = 10) -> tuple[list[str], list[str]]:
    """Codes shown once to the user, and their digests (all that is stored)."""
    codes = [f"{secrets.token_hex(4)}-{secrets.token_hex(4)}" for _ in range(count)]
    return codes, [_digest(c) for c in codes]


@dataclass
class User:
    id: str
    email: str
    password_hash: str
    role: Role
    created_at: datetime
    totp_secret: str | None = None
    totp_enrolled: bool = False
    recovery_digests: list[str] = field(default_factory=list)
    failed_attempts: int = 0
    locked_until: datetime | None = None
    locale: str = "en"
    session_epoch: int = 0
    totp_last_step: int = 0
    """The newest step whose code was accepted: a code is never accepted twice (no replay)."""

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and now < self.locked_until

    def record_failure(self, now: datetime, max_failures: int, lockout: timedelta) -> bool:
        """Count a failed password or code; returns True when this failure locks the user."""
        if self.locked_until is not None and now >= self.locked_until:
            self.failed_attempts, self.locked_until = 0, None
        self.failed_attempts += 1
        if self.failed_attempts >= max_failures:
            self.locked_until = now + lockout
            self.failed_attempts = 0
            return True
        return False

    def record_success(self) -> None:
        self.failed_attempts, self.locked_until = 0, None

    def second_factor_matches(self, code: str, now: datetime) -> bool:
        """A TOTP code not used before, or an unused recovery code (which is then spent)."""
        step = totp_step(self.totp_secret, code, now) if self.totp_secret else None
        if step is not None:
            if step <= self.totp_last_step:
                return False
            self.totp_last_step = step
            return True
        digest = _digest(code)
        for stored in self.recovery_digests:
            if hmac.compare_digest(stored, digest):
                self.recovery_digests.remove(stored)
                return True
        return False

    def enrol(self, secret: str) -> list[str]:
        """Turn TOTP on with `secret`; returns fresh recovery codes to show once."""
        self.totp_secret, self.totp_enrolled = secret, True
        codes, self.recovery_digests = new_recovery_codes()
        return codes


def require_action(role: Role) -> None:
    if not role.can_act:
        raise Forbidden("viewers cannot act")


@dataclass(frozen=True)
class AuditRecord:
    at: datetime
    actor: str
    role: str
    action: str
    target: str
    result: str
    detail: str = ""
