"""Signed session cookies (itsdangerous) carrying the signed-in user and the CSRF token."""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "console_session"


@dataclass
class Session:
    """What the cookie holds; the cookie is signed, so none of it can be forged."""

    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    uid: str | None = None
    """The signed-in user (both factors passed)."""
    pending: str | None = None
    """A user who passed the password and still owes the second factor."""
    epoch: int = 0
    verified_at: float = 0.0
    """When (epoch seconds) the user last passed a second-factor check: key operations need
    it recent (step-up)."""
    locale: str | None = None
    flash: list[dict[str, Any]] = field(default_factory=list)
    changed: bool = False

    def sign_in(self, user_id: str, epoch: int) -> None:
        """A fresh CSRF token at every privilege change (no fixation)."""
        self.uid, self.pending, self.epoch = user_id, None, epoch
        self.verified_at = time.time()  # signing in is a fresh second-factor check
        self.csrf = secrets.token_urlsafe(24)
        self.changed = True

    def sign_out(self) -> None:
        self.uid = self.pending = None
        self.verified_at = 0.0
        self.csrf = secrets.token_urlsafe(24)
        self.changed = True

    def say(self, kind: str, text: str, details: list[Any] | None = None) -> None:
        self.flash.append({"kind": kind, "text": text[:500], "details": (details or [])[:20]})
        self.changed = True

    def take_flash(self) -> list[dict[str, Any]]:
        shown, self.flash = self.flash, []
        if shown:
            self.changed = True
        return shown

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


class SessionCodec:
    def __init__(self, secret: str, max_age_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="dropship-console-session")
        self.max_age_s = max_age_s

    def dumps(self, session: Session) -> str:
        data = asdict(session)
        data.pop("changed")
        return self._serializer.dumps(data)

    def loads(self, raw: str | None) -> Session:
        """The cookie's session, or a fresh anonymous one when absent, forged or expired."""
        if raw:
            try:
                data = self._serializer.loads(raw, max_age=self.max_age_s)
                return Session(**{k: v for k, v in data.items() if k != "changed"})
            except (BadSignature, TypeError, ValueError):
                pass
        return Session(changed=True)
