"""The console's pages: suppliers, alerts, KPIs and the audit log."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from services.console.domain import User
from services.console.inbox import items
from services.console.web import console_of, current_user, render

router = APIRouter()
SignedIn = Annotated[User, Depends(current_user)]


@router.get("/suppliers", response_class=HTMLResponse)
async def suppliers(request: Request, user: SignedIn) -> Response:
    return await suppliers_view(request)


async def suppliers_view(
    request: Request, csv_errors: list[Any] | None = None, csv_message: str = ""
) -> Response:
    b = console_of(request).backends
    listed = await b.get("supplier", "/v1/suppliers")
    listed_items = items(listed)
    cards = await asyncio.gather(
        *(b.get("supplier", f"/v1/suppliers/{s['id']}/scorecard") for s in listed_items)
    )
    rows = [
        {**s, "card": c.body if c.ok else None} for s, c in zip(listed_items, cards, strict=True)
    ]
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
        offers=items(offers),
        card=card.body if card.ok else None,
    )


@router.get("/alerts", response_class=HTMLResponse)
async def alerts(request: Request, user: SignedIn) -> Response:
    found = await console_of(request).backends.get("notify", "/v1/alerts", limit=200)
    return render(
        request, "alerts.html", alerts=items(found), error=None if found.ok else found.message
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
