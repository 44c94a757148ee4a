"""What to tell whom, and when: the notify service's rules and records, free of I/O.

A *notice* goes to a customer (e-mail, SMS); an *alert* goes to the ops team (chat
webhooks). Both become rows in the notification log, one per channel, keyed so that
the same (order, kind, reason) is never sent twice on a channel however often the
event that caused it arrives.

Errors (mapped to HTTP once, in `errors.py`):

- `NotifyError`: the root of every error below.
  - `NotificationNotFound`, `AlertNotFound`: no such id.
  - `NotDead`: only a dead notification can be sent again by hand.
  - `InvalidCursor`: a page cursor this service did not issue.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from shared.events import DelayReason, Severity, SupplierAvailability

LOCALES = ("en", "zh-CN")
DEFAULT_LOCALE = "en"


class Kind(StrEnum):
    """Customer notice kinds; each has a template per locale."""

    SHIPMENT_DELAYED = "shipment_delayed"
    SHIPMENT_DISPATCHED = "shipment_dispatched"
    ORDER_CANCELLED = "order_cancelled"
    ORDER_ROUTING_FAILED = "order_routing_failed"
    RETURN_REQUESTED = "return_requested"
    RETURN_AUTHORIZED = "return_authorized"
    RETURN_REJECTED = "return_rejected"
    REFUND_ISSUED = "refund_issued"


class AlertKind(StrEnum):
    ROUTING_FAILED = "routing_failed"
    SHIPMENT_DELAYED = "shipment_delayed"
    DLQ_GROWTH = "dlq_growth"
    SUPPLIER_BREAKER_OPEN = "supplier_breaker_open"
    ORDER_HELD = "order_held"
    LINES_WAITING = "lines_waiting"
    COMPLAINT_RESPONSE = "complaint_response"
    """A complaint awaiting its first response; due at the tier's `respond_by`."""
    COMPLAINT_UNRESOLVED = "complaint_unresolved"
    """A complaint still open past its resolution target (`resolve_by`)."""
    MARKETPLACE_SYNC_FAILED = "marketplace_sync_failed"
    EXTERNAL = "external"


class Status(StrEnum):
    """Life of one notification on one channel."""

    PENDING = "pending"  # waiting for its send time (digest window, retry backoff)
    SENDING = "sending"  # leased by a sender; a crash leaves the lease to expire
    SENT = "sent"
    DEAD = "dead"  # gave up after retries or a permanent error; visible, retryable by hand
    SKIPPED = "skipped"  # nothing to send to (no phone, customer redacted, order unknown)
    SUPPRESSED = "suppressed"  # over the customer's daily cap


TERMINAL = frozenset({Status.SENT, Status.DEAD, Status.SKIPPED, Status.SUPPRESSED})

SEVERITY_ORDER = (Severity.NORMAL, Severity.URGENT, Severity.MAJOR)

SMS_WORTHY: frozenset[tuple[Kind, str]] = frozenset(
    {
        (Kind.SHIPMENT_DELAYED, DelayReason.NO_TRACKING_BY_DEADLINE),
        (Kind.SHIPMENT_DELAYED, DelayReason.CARRIER_EXCEPTION),
        (Kind.SHIPMENT_DELAYED, DelayReason.SUPPLIER_BACKORDER),
        (Kind.SHIPMENT_DELAYED, DelayReason.LOST_IN_TRANSIT),
        (Kind.SHIPMENT_DISPATCHED, ""),
        (Kind.ORDER_ROUTING_FAILED, ""),
    }
)
"""Notices worth a text message when the customer has a phone; `at_risk` is e-mail only."""

OPS_ONLY_DELAYS = frozenset({DelayReason.NOT_ACCEPTED_IN_TIME})
"""Delays the customer is not told about: ops chase the supplier (the promised ship date
is still ahead, so the customer has nothing to hear yet)."""

CAPPED_KINDS = frozenset({Kind.SHIPMENT_DELAYED, Kind.SHIPMENT_DISPATCHED})
"""Kinds the per-customer daily cap applies to. Cancellation and refund notices are
transactional: the customer must always hear about money, so they are never capped."""


def normalise_locale(locale: str | None) -> str:
    """The template locale for a customer's locale: `zh`, `zh_CN`, `zh-Hans` → `zh-CN`."""
    if not locale:
        return DEFAULT_LOCALE
    tag = locale.strip().replace("_", "-").lower()
    if tag.startswith("zh"):
        return "zh-CN"
    return DEFAULT_LOCALE


def notice_key(order_id: str, kind: Kind, reason: str) -> str:
    return f"{order_id}:{kind.value}:{reason}"


def sms_worthy(kind: Kind, reason: str) -> bool:
    return (kind, "" if kind is not Kind.SHIPMENT_DELAYED else reason) in SMS_WORTHY


def alert_severity_for_delay(severity: Severity) -> Severity | None:
    """Ops hear about urgent and major delays; a normal one (at risk) is the customer's only."""
    return None if severity is Severity.NORMAL else severity


def escalate(severity: Severity) -> Severity:
    """The next tier up; major stays major (and re-fires)."""
    index = SEVERITY_ORDER.index(severity)
    return SEVERITY_ORDER[min(index + 1, len(SEVERITY_ORDER) - 1)]


@dataclass(frozen=True)
class ResponseTargets:
    """How long ops have to acknowledge an alert of each severity before it escalates."""

    normal: timedelta = timedelta(hours=24)
    urgent: timedelta = timedelta(hours=4)
    major: timedelta = timedelta(hours=1)

    def for_severity(self, severity: Severity) -> timedelta:
        return {
            Severity.NORMAL: self.normal,
            Severity.URGENT: self.urgent,
            Severity.MAJOR: self.major,
        }[severity]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    initial: timedelta = timedelta(seconds=2)
    maximum: timedelta = timedelta(minutes=10)

    def next_attempt(
        self, now: datetime, attempts: int, retry_after: float | None = None
    ) -> datetime | None:
        """When to try again after `attempts` failures, or None to give up (dead-letter).

        Full-jitter exponential backoff; a server's `Retry-After` is a floor, never ignored.
        """
        if attempts >= self.max_attempts:
            return None
        ceiling = min(
            self.maximum.total_seconds(), self.initial.total_seconds() * 2 ** (attempts - 1)
        )
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return now + timedelta(seconds=delay)


@dataclass(frozen=True)
class Policy:
    """The configuration the rules need; built from settings once per process."""

    digest_window: timedelta = timedelta(seconds=60)
    sms_enabled: bool = False
    ops_channels: tuple[tuple[str, str], ...] = ()
    """(kind, name) of every configured ops webhook."""
    targets: ResponseTargets = field(default_factory=ResponseTargets)


# -- errors ---------------------------------------------------------------------------------


class NotifyError(Exception):
    """Root of the notify service's errors."""

    details: Any = None


class NotificationNotFound(NotifyError):
    def __init__(self, notification_id: str) -> None:
        super().__init__(f"notification {notification_id} not found")


class AlertNotFound(NotifyError):
    def __init__(self, alert_id: str) -> None:
        super().__init__(f"alert {alert_id} not found")


class NotDead(NotifyError):
    def __init__(self, status: Status) -> None:
        super().__init__(f"notification is {status}; only dead notifications are retried")


class InvalidCursor(NotifyError):
    def __init__(self) -> None:
        super().__init__("cursor is not one this API issued")
        self.details = [{"field": "query.cursor", "reason": "not a cursor from a previous page"}]


# -- records --------------------------------------------------------------------------------

RecipientKind = Literal["customer", "ops"]


@dataclass(frozen=True)
class Notification:
    """One send on one channel, as the notification log holds it."""

    id: str
    dedupe_key: str
    channel: str
    """email, sms, or an ops webhook kind (slack, dingtalk, wecom, feishu, generic)."""
    target: str
    """`customer`, or the ops channel's name."""
    recipient_kind: RecipientKind
    order_id: str | None
    kind: str
    """A `Kind` for a customer notice, an `AlertKind` for an ops alert."""
    reason: str
    alert_id: str | None
    severity: str | None
    template: str
    locale: str | None
    status: Status
    attempts: int
    """Attempts so far; a claimed send counts the attempt under way (its fencing token)."""
    next_attempt_at: datetime
    last_error: str | None
    details: dict[str, Any]
    created_at: datetime
    sent_at: datetime | None

    @property
    def final(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class NotificationFilter:
    order_id: str | None = None
    status: Status | None = None
    recipient_kind: RecipientKind | None = None


@dataclass(frozen=True)
class Alert:
    """Something ops must act on; it escalates until someone acknowledges it."""

    id: str
    dedupe_key: str
    kind: AlertKind
    severity: Severity
    order_id: str | None
    title: str
    lines: list[str]
    raised_at: datetime
    due_at: datetime
    escalations: int = 0
    acked_at: datetime | None = None
    acked_by: str | None = None


@dataclass(frozen=True)
class FactLine:
    line_id: str
    sku: str
    quantity: int


@dataclass(frozen=True)
class OrderFact:
    """What notify keeps of a placed order: enough to say which items a notice is about."""

    order_id: str
    external_id: str | None
    channel: str
    currency: str
    placed_at: datetime
    lines: list[FactLine]


@dataclass
class SupplierWatch:
    """A supplier's availability as its `supplier-status-changed` events told it."""

    supplier_id: str
    available: bool = True
    outages: int = 0
    """How many times it became unavailable; numbers each outage so ops hear once per outage."""
    changed_at: datetime | None = None

    def record(self, status: SupplierAvailability, changed_at: datetime) -> bool:
        """Apply a status change; True when it starts a new outage.

        A change older than the last one applied is stale (it was overtaken) and is
        ignored; `unavailable` while already unavailable is the same outage.
        """
        if self.changed_at is not None and changed_at < self.changed_at:
            return False
        self.changed_at = changed_at
        if status is SupplierAvailability.AVAILABLE:
            self.available = True
            return False
        if not self.available:
            return False
        self.available = False
        self.outages += 1
        return True


@dataclass
class ComplaintWatch:
    """A complaint's clocks as its events told them; the events travel on three topics, so a
    response or resolution may arrive before the filing it belongs to."""

    complaint_id: str
    order_id: str | None = None
    tier: Severity | None = None
    filed_at: datetime | None = None
    respond_by: datetime | None = None
    resolve_by: datetime | None = None
    responded_at: datetime | None = None
    resolved_at: datetime | None = None
    resolution_alerted_at: datetime | None = None

    def file(
        self,
        order_id: str,
        tier: Severity,
        filed_at: datetime,
        respond_by: datetime,
        resolve_by: datetime,
    ) -> None:
        self.order_id, self.tier, self.filed_at = order_id, tier, filed_at
        self.respond_by, self.resolve_by = respond_by, resolve_by

    @property
    def awaiting_response(self) -> bool:
        """Filed, and neither answered nor resolved: ops have a response target to meet."""
        return self.filed_at is not None and self.responded_at is None and self.resolved_at is None

    def respond(self, at: datetime) -> None:
        """The first response stands (later ones are not events, a redelivery changes nothing)."""
        if self.responded_at is None or at < self.responded_at:
            self.responded_at = at

    def resolve(self, at: datetime) -> None:
        if self.resolved_at is None or at < self.resolved_at:
            self.resolved_at = at

    def resolution_missed(self, now: datetime) -> bool:
        """Past its resolution target, unresolved, and ops not yet told."""
        return (
            self.resolve_by is not None
            and self.resolved_at is None
            and self.resolution_alerted_at is None
            and self.resolve_by <= now
        )


def complaint_response_key(complaint_id: str) -> str:
    return f"complaint-response:{complaint_id}"


def complaint_resolution_key(complaint_id: str) -> str:
    return f"complaint-resolution:{complaint_id}"
