"""Notify HTTP API: the delivery log, alerts and their acknowledgement, template previews."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from services.notify import handlers
from services.notify.domain import LOCALES, Kind, Status
from services.notify.rendering import SAMPLES, Renderer
from services.notify.settings import NotifySettings
from services.notify.store import NotifyUnitOfWork
from shared.db import aware
from shared.http import Conflict, NotFound, Unprocessable, check_api_key
from shared.runtime import ServiceRuntime

router = APIRouter(prefix="/v1")
_renderer = Renderer()


async def _runtime(request: Request) -> ServiceRuntime[NotifyUnitOfWork]:
    runtime: ServiceRuntime[NotifyUnitOfWork] = request.app.state.runtime
    return runtime


Runtime = Annotated[ServiceRuntime[NotifyUnitOfWork], Depends(_runtime)]


async def admin(runtime: Runtime, x_api_key: Annotated[str | None, Header()] = None) -> str:
    assert isinstance(runtime.settings, NotifySettings)
    check_api_key(x_api_key, runtime.settings.api_key_set)
    return x_api_key or ""


async def new_uow(runtime: Runtime) -> NotifyUnitOfWork:
    return runtime.uow()


Admin = Annotated[str, Depends(admin)]
UoW = Annotated[NotifyUnitOfWork, Depends(new_uow)]


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


def _notification(row: Any) -> dict[str, Any]:
    final = row.status not in (Status.PENDING.value, Status.SENDING.value)
    return {
        "id": row.id,
        "order_id": row.order_id,
        "recipient_kind": row.recipient_kind,
        "channel": row.channel,
        "target": row.target,
        "kind": row.kind,
        "reason": row.reason,
        "template": f"{row.template}" + (f"@{row.locale}" if row.locale else ""),
        "locale": row.locale,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "alert_id": row.alert_id,
        "created_at": aware(row.created_at),
        "next_attempt_at": None if final else aware(row.next_attempt_at),
        "sent_at": aware(row.sent_at),
    }


def _alert(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "severity": row.severity,
        "order_id": row.order_id,
        "title": row.title,
        "details": list(row.details.get("lines", [])),
        "raised_at": aware(row.raised_at),
        "due_at": aware(row.due_at),
        "escalations": row.escalations,
        "acked_at": aware(row.acked_at),
        "acked_by": row.acked_by,
    }


def _cursor(row: Any) -> str:
    raw = json.dumps([aware(row.created_at).isoformat(), row.id])  # type: ignore[union-attr]
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    try:
        created, last_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(last_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Unprocessable(
            "cursor is not one this API issued",
            details=[{"field": "query.cursor", "reason": "not a cursor from a previous page"}],
        ) from exc


@router.get(
    "/notifications",
    response_model=NotificationPage,
    tags=["delivery log"],
    summary="Every send with its channel, template, status and attempts (oldest first)",
)
async def list_notifications(
    uow: UoW,
    _: Admin,
    order_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    status: Status | None = None,
    recipient_kind: Literal["customer", "ops"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    after = _after(cursor)
    async with uow:
        rows = await uow.list_notifications(
            order_id=order_id,
            status=status.value if status else None,
            recipient_kind=recipient_kind,
            after=after,
            limit=limit + 1,
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "items": [_notification(r) for r in rows],
        "next_cursor": _cursor(rows[-1]) if more else None,
    }


@router.get(
    "/notifications/{notification_id}", response_model=NotificationOut, tags=["delivery log"]
)
async def get_notification(notification_id: str, uow: UoW, _: Admin) -> dict[str, Any]:
    async with uow:
        row = await uow.notification(notification_id)
    if row is None:
        raise NotFound(f"notification {notification_id} not found")
    return _notification(row)


@router.post(
    "/notifications/{notification_id}/retry",
    response_model=NotificationOut,
    tags=["delivery log"],
    summary="Send a dead-lettered notification again (409 unless it is dead)",
)
async def retry_notification(notification_id: str, uow: UoW, _: Admin) -> dict[str, Any]:
    async with uow:
        requeued = await uow.requeue(notification_id)
        await uow.commit()
    async with uow:
        row = await uow.notification(notification_id)
    if row is None:
        raise NotFound(f"notification {notification_id} not found")
    if not requeued:
        raise Conflict(
            f"notification is {row.status}; only dead notifications are retried",
            code="not_dead",
        )
    return _notification(row)


@router.get("/alerts", response_model=AlertPage, tags=["alerts"], summary="Newest first")
async def list_alerts(
    uow: UoW,
    _: Admin,
    open_only: Annotated[bool, Query(alias="open")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    async with uow:
        rows = await uow.list_alerts(open_only=open_only, limit=limit)
    return {"items": [_alert(r) for r in rows], "next_cursor": None}


@router.get("/alerts/{alert_id}", response_model=AlertOut, tags=["alerts"])
async def get_alert(alert_id: str, uow: UoW, _: Admin) -> dict[str, Any]:
    async with uow:
        row = await uow.alert(alert_id)
    if row is None:
        raise NotFound(f"alert {alert_id} not found")
    return _alert(row)


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=AlertOut,
    tags=["alerts"],
    summary="Acknowledge an alert: it stops escalating (idempotent; the first ack is kept)",
)
async def ack_alert(
    alert_id: str, uow: UoW, _: Admin, body: Annotated[AckIn | None, Body()] = None
) -> dict[str, Any]:
    row, _acked = await handlers.acknowledge(uow, alert_id, (body or AckIn()).by)
    if row is None:
        raise NotFound(f"alert {alert_id} not found")
    return _alert(row)


@router.get(
    "/templates/{kind}/preview",
    response_model=PreviewOut,
    tags=["templates"],
    summary="A notice rendered with sample data; `format=html` shows the e-mail itself",
    response_model_exclude_none=True,
)
async def preview(
    kind: Kind,
    locale: Annotated[
        str, Query(min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
    ] = "en",
    format: Literal["json", "html"] = "json",
) -> Any:
    rendered = _renderer.render(
        kind,
        locale,
        {
            "merchant": "Dropship Demo Store",
            "support_email": "support@dropship.example",
            "order_ref": "#1042",
            "customer_name": "Alex Doe" if not locale.lower().startswith("zh") else "张三",
            **SAMPLES[kind],
        },
    )
    if format == "html":
        return HTMLResponse(rendered.html)
    return {
        "kind": kind,
        "locale": rendered.locale,
        "subject": rendered.subject,
        "text": rendered.text,
        "html": rendered.html,
        "sms": rendered.sms,
    }


@router.get("/templates", tags=["templates"], summary="Notice kinds and locales with templates")
async def templates() -> dict[str, list[str]]:
    return {"kinds": [k.value for k in Kind], "locales": list(LOCALES)}
