"""Signed callbacks with a timestamp: HMAC-SHA256 over `<timestamp>.<body>`, a replay window.

A signature over the body alone lets anyone who captured one callback send it again
forever. The sender puts the Unix time (whole seconds) in a timestamp header and signs
`f"{timestamp}.".encode() + body`; the receiver refuses a timestamp more than the window
away from its clock (either side), then checks the signature. Deliveries inside the
window are deduped by their delivery id, so a replay inside it changes nothing either.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable

from shared.http import secrets_equal


class CallbackRefused(Exception):
    """Why a callback is not authentic (the message names the header and the reason)."""


def sign_callback(secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of `<timestamp>.<body>` with `secret`."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def sign_body(secret: str, body: bytes) -> str:
    """The previous scheme: hex HMAC-SHA256 of the body alone (no replay protection)."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_callback(
    *,
    body: bytes,
    secret: str,
    signature: str | None,
    timestamp: str | None,
    prefix: str,
    window_s: float,
    accept_unstamped: bool = False,
    clock: Callable[[], float] = time.time,
) -> None:
    """Raise `CallbackRefused` unless `signature` signs `timestamp` and `body` with `secret`
    and `timestamp` is within `window_s` of now. `prefix` names the headers (`X-Supplier`).

    With `accept_unstamped` (development only) a callback without a timestamp may be signed
    the previous way, over the body alone.
    """
    if not signature or not secret:
        raise CallbackRefused(f"invalid or missing {prefix}-Signature")
    given = signature.strip().lower()
    if timestamp is None and accept_unstamped:
        if secrets_equal(sign_body(secret, body), given):
            return
        raise CallbackRefused(f"invalid or missing {prefix}-Signature")
    stamp = (timestamp or "").strip()
    if not stamp.isdigit() or len(stamp) > 12:
        raise CallbackRefused(f"missing or malformed {prefix}-Timestamp (Unix seconds, signed)")
    if abs(clock() - int(stamp)) > window_s:
        raise CallbackRefused(
            f"{prefix}-Timestamp outside the replay window (±{window_s:g} s of our clock)"
        )
    if not secrets_equal(sign_callback(secret, stamp, body), given):
        raise CallbackRefused(f"invalid or missing {prefix}-Signature")
