"""Notify HTTP API: requests to handlers, records to responses; errors are mapped in `errors.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse

from services.notify.domain import LOCALES, Kind, NotificationFilter, Status
from services.notify.handlers import commands, queries
from services.notify.rendering import Renderer
from services.notify.schemas import (
    AckIn,
    AlertOut,
    AlertPage,
    NotificationOut,
    NotificationPage,
    PreviewOut,
    render_alert,
    render_notification,
    render_preview,
)
from services.notify.settings import NotifySettings
from services.notify.store import NotifyUnitOfWork
from shared.http import check_api_key
from shared.runtime import ServiceRuntime

router = APIRouter(prefix="/v1")


@dataclass(frozen=True)
class ApiDeps:
    """What the routes need, typed; `create_app` puts it on `app.state.api`."""

    runtime: ServiceRuntime[NotifyUnitOfWork]
    settings: NotifySettings
    renderer: Renderer


async def _deps(request: Request) -> ApiDeps:
    deps: ApiDeps = request.app.state.api
    return deps


Deps = Annotated[ApiDeps, Depends(_deps)]


async def admin(deps: Deps, x_api_key: Annotated[str | None, Header()] = None) -> str:
    check_api_key(x_api_key, deps.settings.admin_key_set)
    return x_api_key or ""


async def new_uow(deps: Deps) -> NotifyUnitOfWork:
    return deps.runtime.uow()


Admin = Annotated[str, Depends(admin)]
UoW = Annotated[NotifyUnitOfWork, Depends(new_uow)]


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
) -> NotificationPage:
    flt = NotificationFilter(order_id=order_id, status=status, recipient_kind=recipient_kind)
    items, next_cursor = await queries.notifications(uow, flt, limit, cursor)
    return NotificationPage(items=[render_notification(n) for n in items], next_cursor=next_cursor)


@router.get(
    "/notifications/{notification_id}", response_model=NotificationOut, tags=["delivery log"]
)
async def get_notification(notification_id: str, uow: UoW, _: Admin) -> NotificationOut:
    return render_notification(await queries.notification(uow, notification_id))


@router.post(
    "/notifications/{notification_id}/retry",
    response_model=NotificationOut,
    tags=["delivery log"],
    summary="Send a dead-lettered notification again (409 unless it is dead)",
)
async def retry_notification(notification_id: str, uow: UoW, _: Admin) -> NotificationOut:
    return render_notification(await commands.retry(uow, notification_id))


@router.get("/alerts", response_model=AlertPage, tags=["alerts"], summary="Newest first")
async def list_alerts(
    uow: UoW,
    _: Admin,
    open_only: Annotated[bool, Query(alias="open")] = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AlertPage:
    found = await queries.alerts(uow, open_only=open_only, limit=limit)
    return AlertPage(items=[render_alert(a) for a in found], next_cursor=None)


@router.get("/alerts/{alert_id}", response_model=AlertOut, tags=["alerts"])
async def get_alert(alert_id: str, uow: UoW, _: Admin) -> AlertOut:
    return render_alert(await queries.alert(uow, alert_id))


@router.post(
    "/alerts/{alert_id}/ack",
    response_model=AlertOut,
    tags=["alerts"],
    summary="Acknowledge an alert: it stops escalating (idempotent; the first ack is kept)",
)
async def ack_alert(
    alert_id: str, uow: UoW, _: Admin, body: Annotated[AckIn | None, Body()] = None
) -> AlertOut:
    return render_alert(await commands.acknowledge(uow, alert_id, (body or AckIn()).by))


@router.get(
    "/templates/{kind}/preview",
    response_model=PreviewOut,
    tags=["templates"],
    summary="A notice rendered with sample data; `format=html` shows the e-mail itself",
    response_model_exclude_none=True,
)
async def preview(
    kind: Kind,
    deps: Deps,
    locale: Annotated[
        str, Query(min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
    ] = "en",
    format: Literal["json", "html"] = "json",
) -> PreviewOut | HTMLResponse:
    rendered = queries.preview(deps.renderer, kind, locale)
    if format == "html":
        return HTMLResponse(rendered.html)
    return render_preview(kind, rendered)


@router.get("/templates", tags=["templates"], summary="Notice kinds and locales with templates")
async def templates() -> dict[str, list[str]]:
    return {"kinds": [k.value for k in Kind], "locales": list(LOCALES)}
