"""Signed, retried outbound deliveries: supplier callbacks and carrier tracking updates."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

log = logging.getLogger(__name__)

USER_AGENT = "dropship-supplier-simulator/1"


def utc_now() -> str:
    """RFC 3339 UTC with milliseconds, e.g. `2026-11-23T10:00:00.123Z`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def sign(secret: str, body: bytes, timestamp: str) -> str:
    """Hex HMAC-SHA256 of `<timestamp>.<body>` (what `X-*-Signature` headers carry; the
    timestamp, Unix seconds, travels in `X-*-Timestamp`: docs/supplier-api.md)."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def encode(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    backoff_s: float = 0.25
    backoff_max_s: float = 5.0

    def delay(self, attempt: int, jitter: random.Random, retry_after: float | None) -> float:
        """Exponential backoff with +/-25% jitter after `attempt` (1-based) failed."""
        base = min(self.backoff_max_s, self.backoff_s * 2 ** (attempt - 1))
        if retry_after is not None:
            base = max(base, min(retry_after, self.backoff_max_s))
        return float(base * (0.75 + jitter.random() / 2))


@dataclass(frozen=True)
class Channel:
    """How one kind of delivery is signed and labelled."""

    kind: str
    signature_header: str
    delivery_id_header: str
    timestamp_header: str


SUPPLIER_CALLBACK = Channel(
    "callback", "X-Supplier-Signature", "X-Supplier-Delivery-Id", "X-Supplier-Timestamp"
)
TRACKING_UPDATE = Channel(
    "tracking", "X-Tracking-Signature", "X-Tracking-Delivery-Id", "X-Tracking-Timestamp"
)


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers["Retry-After"]))
    except (KeyError, ValueError):
        return None


def lost(channel: Channel, url: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The record of a delivery that was never made (`lose_callbacks`)."""
    now = utc_now()
    return {
        "kind": channel.kind,
        "type": str(payload.get("type") or payload.get("status")),
        "delivery_id": str(uuid.uuid4()),
        "url": url,
        "payload": payload,
        "status": "lost",
        "attempts": 0,
        "http_status": None,
        "error": "lose_callbacks: not delivered",
        "occurred_at": now,
        "completed_at": now,
    }


class Deliverer:
    """POSTs one signed body until it is taken (2xx), refused (other 4xx) or attempts run out.

    Every attempt of one delivery sends the same bytes, signature and delivery id, so the
    receiver can dedupe; 5xx, 429 and transport errors (the receiver may be restarting)
    are retried with backoff, anything else is final.
    """

    def __init__(self, client: httpx.AsyncClient, policy: RetryPolicy) -> None:
        self._client = client
        self._policy = policy
        self._jitter = random.Random()  # timing only: never the seeded behaviour stream

    async def deliver(
        self, channel: Channel, url: str, payload: dict[str, Any], secret: str
    ) -> dict[str, Any]:
        body = encode(payload)
        delivery_id = str(uuid.uuid4())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            channel.delivery_id_header: delivery_id,
        }
        occurred_at = utc_now()
        http_status: int | None = None
        error: str | None = None
        attempt = 0
        outcome = "failed"
        while attempt < self._policy.max_attempts:
            attempt += 1
            retry_after: float | None = None
            stamp = str(int(time.time()))  # signed afresh: a retry may leave minutes later
            headers[channel.timestamp_header] = stamp
            headers[channel.signature_header] = sign(secret, body, stamp)
            try:
                response = await self._client.post(url, content=body, headers=headers)
            except httpx.TransportError as exc:
                http_status, error = None, f"{type(exc).__name__}: {exc}"
            else:
                http_status = response.status_code
                if response.is_success:
                    outcome, error = "sent", None
                    break
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code != 429 and response.status_code < 500:
                    break  # refused (bad signature, unknown order...): retrying cannot help
                retry_after = _retry_after(response)
            if attempt < self._policy.max_attempts:
                await asyncio.sleep(self._policy.delay(attempt, self._jitter, retry_after))
        event = {
            "kind": channel.kind,
            "type": str(payload.get("type") or payload.get("status")),
            "delivery_id": delivery_id,
            "url": url,
            "payload": payload,
            "status": outcome,
            "attempts": attempt,
            "http_status": http_status,
            "error": error,
            "occurred_at": occurred_at,
            "completed_at": utc_now(),
        }
        level = logging.INFO if outcome == "sent" else logging.WARNING
        log.log(
            level,
            "%s %s %s after %d attempt(s)",
            channel.kind,
            event["type"],
            outcome,
            attempt,
            extra={"delivery_id": delivery_id, "url": url, "http_status": http_status},
        )
        return event
