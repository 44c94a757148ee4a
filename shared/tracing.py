"""W3C trace context carried from HTTP requests into event envelopes and back out of consumers."""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

traceparent_var: ContextVar[str | None] = ContextVar("traceparent", default=None)

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def new_traceparent(parent: str | None = None) -> str:
    """A child span of `parent` (same trace id, new span id), or the root of a new trace."""
    match = _TRACEPARENT.match(parent or "")
    trace_id = match.group(1) if match else secrets.token_hex(16)
    flags = match.group(3) if match else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def is_valid(traceparent: str | None) -> bool:
    return bool(traceparent and _TRACEPARENT.match(traceparent))


def current() -> str | None:
    return traceparent_var.get()
