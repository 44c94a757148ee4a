"""Notify HTTP shapes: what the delivery log, alerts and previews look like on the wire."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.notify.domain import Alert, Kind, Notification, Status
from services.notify.rendering import Rendered


class NotificationOut(BaseModel):
    id: str
    order_id: str | None
    recipient_kind: Literal["customer", "ops"]
    channel: str = Field(description="email, sms, slack, dingtalk, wecom, feishu or generic")
    target: str = Field(description="`customer`, or the ops channel's name")
    kind: str
    reason: str
    template: str
    locale: str | None
    status: Status
    attempts: int
    last_error: str | None = Field(description="Why the last attempt failed (PII scrubbed)")
    alert_id: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: str | None


class AlertOut(BaseModel):
    id: str
    kind: str
    severity: Literal["normal", "urgent", "major"]
    order_id: str | None
    title: str
    details: list[str]
    raised_at: datetime
    due_at: datetime = Field(description="When it escalates unless acknowledged")
    escalations: int
    acked_at: datetime | None
    acked_by: str | None


class AlertPage(BaseModel):
    items: list[AlertOut]
    next_cursor: str | None = None


class AckIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    by: Annotated[str, Field(min_length=1, max_length=200)] = "ops"


class PreviewOut(BaseModel):
    kind: Kind
    locale: str = Field(description="The locale actually used (unknown locales fall back to en)")
    subject: str
    text: str
    html: str
    sms: str


def render_notification(n: Notification) -> NotificationOut:
    return NotificationOut(
        id=n.id,
        order_id=n.order_id,
        recipient_kind=n.recipient_kind,
        channel=n.channel,
        target=n.target,
        kind=n.kind,
        reason=n.reason,
        template=n.template + (f"@{n.locale}" if n.locale else ""),
        locale=n.locale,
        status=n.status,
        attempts=n.attempts,
        last_error=n.last_error,
        alert_id=n.alert_id,
        created_at=n.created_at,
        next_attempt_at=None if n.final else n.next_attempt_at,
        sent_at=n.sent_at,
    )


def render_alert(a: Alert) -> AlertOut:
    return AlertOut(
        id=a.id,
        kind=a.kind.value,
        severity=a.severity.value,
        order_id=a.order_id,
        title=a.title,
        details=a.lines,
        raised_at=a.raised_at,
        due_at=a.due_at,
        escalations=a.escalations,
        acked_at=a.acked_at,
        acked_by=a.acked_by,
    )


def render_preview(kind: Kind, rendered: Rendered) -> PreviewOut:
    return PreviewOut(
        kind=kind,
        locale=rendered.locale,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        sms=rendered.sms,
    )
