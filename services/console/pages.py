"""The console's pages: exceptions inbox, orders, suppliers, alerts, KPIs and the audit log."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.clients import ApiResult
from services.console.domain import User
from services.console.web import console_of, current_user, render

router = APIRouter()
SignedIn = Annotated[User, Depends(current_user)]
SEVERITY_ORDER = {"major": 0, "urgent": 1, "normal": 2}


def _items(result: ApiResult) -> list[Any]:
    if result.ok and isinstance(result.body, dict):
        return list(result.body.get("items", []))
    return []


def _problem(*results: ApiResult) -> list[str]:
    """Backend errors worth showing (a status the order service does not know yet is not one)."""
    return [r.message for r in results if not r.ok and r.status != 422]


@router.get("/", response_class=HTMLResponse)
async def inbox(request: Request, user: SignedIn) -> Response:
    b = console_of(request).backends
    attention, held, alerts = await asyncio.gather(
        b.get("order", "/v1/orders", status="needs_attention", limit=100),
        b.get("order", "/v1/orders", status="on_hold", limit=100),
        b.get("notify", "/v1/alerts", open="true", limit=200),
    )
    open_alerts = sorted(
        _items(alerts), key=lambda a: (SEVERITY_ORDER.get(a["severity"], 9), a["due_at"])
    )
    return render(
        request,
        "inbox.html",
        attention=_items(attention),
        held=_items(held),
        alerts=open_alerts,
        problems=_problem(attention, held, alerts),
    )


@router.get("/orders", response_class=HTMLResponse)
async def orders(
    request: Request,
    user: SignedIn,
    q: Annotated[str, Query(max_length=64)] = "",
    status: Annotated[str, Query(max_length=32)] = "",
    day_from: Annotated[date | None, Query(alias="from")] = None,
    day_to: Annotated[date | None, Query(alias="to")] = None,
) -> Response:
    if q.strip():
        return RedirectResponse(f"/orders/{q.strip()}", status_code=303)
    created_from = datetime.combine(day_from, datetime.min.time(), UTC) if day_from else None
    created_to = (
        datetime.combine(day_to + timedelta(days=1), datetime.min.time(), UTC) if day_to else None
    )
    found = await console_of(request).backends.get(
        "order",
        "/v1/orders",
        status=status or None,
        created_from=created_from.isoformat() if created_from else None,
        created_to=created_to.isoformat() if created_to else None,
        limit=100,
    )
    return render(
        request,
        "orders.html",
        orders=_items(found),
        error=None if found.ok else found.message,
        details=found.details,
        status=status,
        day_from=day_from,
        day_to=day_to,
    )


@router.get("/orders/{order_id}", response_class=HTMLResponse)
async def order_page(request: Request, user: SignedIn, order_id: str) -> Response:
    b = console_of(request).backends
    order, timeline, allocations, notices, suppliers = await asyncio.gather(
        b.get("order", f"/v1/orders/{order_id}"),
        b.get("order", f"/v1/orders/{order_id}/timeline"),
        b.get("supplier", "/v1/allocations", order_id=order_id),
        b.get("notify", "/v1/notifications", order_id=order_id),
        b.get("supplier", "/v1/suppliers"),
    )
    if not order.ok:
        return render(request, "order.html", status_code=order.status, error=order.message)
    return render(
        request,
        "order.html",
        order=order.body,
        timeline=_items(timeline),
        allocations=_items(allocations),
        notices=_items(notices),
        suppliers=_items(suppliers),
        problems=_problem(timeline, allocations, notices),
    )


@router.get("/suppliers", response_class=HTMLResponse)
async def suppliers(request: Request, user: SignedIn) -> Response:
    return await suppliers_view(request)


async def suppliers_view(
    request: Request, csv_errors: list[Any] | None = None, csv_message: str = ""
) -> Response:
    b = console_of(request).backends
    listed = await b.get("supplier", "/v1/suppliers")
    items = _items(listed)
    cards = await asyncio.gather(
        *(b.get("supplier", f"/v1/suppliers/{s['id']}/scorecard") for s in items)
    )
    rows = [{**s, "card": c.body if c.ok else None} for s, c in zip(items, cards, strict=True)]
    return render(
        request,
        "suppliers.html",
        status_code=422 if csv_errors is not None else 200,
        suppliers=rows,
        error=None if listed.ok else listed.message,
        csv_errors=csv_errors,
        csv_message=csv_message,
    )


@router.get("/suppliers/{supplier_id}", response_class=HTMLResponse)
async def supplier_page(request: Request, user: SignedIn, supplier_id: str) -> Response:
    b = console_of(request).backends
    supplier, offers, card = await asyncio.gather(
        b.get("supplier", f"/v1/suppliers/{supplier_id}"),
        b.get("supplier", f"/v1/suppliers/{supplier_id}/offers"),
        b.get("supplier", f"/v1/suppliers/{supplier_id}/scorecard"),
    )
    if not supplier.ok:
        return render(request, "supplier.html", status_code=supplier.status, error=supplier.message)
    return render(
        request,
        "supplier.html",
        supplier=supplier.body,
        offers=_items(offers),
        card=card.body if card.ok else None,
    )


@router.get("/alerts", response_class=HTMLResponse)
async def alerts(request: Request, user: SignedIn) -> Response:
    found = await console_of(request).backends.get("notify", "/v1/alerts", limit=200)
    return render(
        request, "alerts.html", alerts=_items(found), error=None if found.ok else found.message
    )


@router.get("/kpis", response_class=HTMLResponse)
async def kpis(
    request: Request,
    user: SignedIn,
    days: Annotated[int, Query(ge=1, le=92)] = 14,
    group_by: Annotated[str, Query(pattern="^(day|supplier|channel)$")] = "day",
) -> Response:
    today = datetime.now(UTC).date()
    report = await console_of(request).backends.get(
        "metrics",
        "/v1/kpis",
        **{"from": (today - timedelta(days=days - 1)).isoformat(), "to": today.isoformat()},
        group_by=group_by,
    )
    return render(
        request,
        "kpis.html",
        report=report.body if report.ok else None,
        report_json=json.dumps(report.body if report.ok else None).replace("<", "\\u003c"),
        error=None if report.ok else report.message,
        days=days,
        group_by=group_by,
    )


@router.get("/audit", response_class=HTMLResponse)
async def audit_log(
    request: Request, user: SignedIn, q: Annotated[str, Query(max_length=200)] = ""
) -> Response:
    entries = await console_of(request).store.audit_log(q)
    return render(request, "audit.html", entries=entries, q=q)
