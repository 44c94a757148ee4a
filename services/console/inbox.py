"""The exceptions inbox (the home page): every kind of exception the services expose, each
row with the action that resolves it."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from services.console.clients import ApiResult
from services.console.domain import User
from services.console.web import console_of, current_user, render

router = APIRouter()
SignedIn = Annotated[User, Depends(current_user)]
SEVERITY_ORDER = {"major": 0, "urgent": 1, "normal": 2}
REROUTABLE = ("routing_failed", "waiting_supplier")
"""Line states a person may route again (the supplier service refuses a line it holds)."""


def items(result: ApiResult) -> list[Any]:
    if result.ok and isinstance(result.body, dict):
        return list(result.body.get("items", []))
    return []


def problems(*results: ApiResult) -> list[str]:
    """Every read that failed, with which service and call and why: a section left empty by a
    failed read must never look like a section with nothing in it."""
    return [f"{r.source}: {r.message}" if r.source else r.message for r in results if not r.ok]


def stuck_lines(orders: list[dict[str, Any]], states: tuple[str, ...]) -> list[dict[str, Any]]:
    """One row per line of these orders in one of `states`, with its order's id."""
    return [
        {**line, "order_id": o["id"], "order_status": o["status"], "created_at": o["created_at"]}
        for o in orders
        for line in o.get("lines", [])
        if line.get("state") in states
    ]


async def inbox_data(request: Request) -> dict[str, Any]:
    b = console_of(request).backends
    results = await asyncio.gather(
        b.get("order", "/v1/orders", status="needs_attention", limit=100),
        b.get("order", "/v1/orders", status="on_hold", limit=100),
        b.get("notify", "/v1/alerts", open="true", limit=200),
        b.get("order", "/v1/orders", waiting="true", limit=100),
        b.get("order", "/v1/delays", reason="lost_in_transit", limit=100),
        b.get("order", "/v1/writebacks", status="failed", limit=100),
        b.get("order", "/v1/complaints", open="true", limit=100),
        b.get("order", "/v1/returns", status="requested", limit=100),
        b.get("order", "/v1/returns", status="authorized", limit=100),
        b.get("order", "/v1/returns", status="received", limit=100),
        b.get("order", "/v1/delays", limit=100),
    )
    attention, held, alerts, waiting, lost, writebacks, complaints, *returns, delays = results
    open_alerts = sorted(
        items(alerts), key=lambda a: (SEVERITY_ORDER.get(a["severity"], 9), a["due_at"])
    )
    open_complaints = sorted(
        items(complaints),
        key=lambda c: (SEVERITY_ORDER.get(c.get("tier", ""), 9), str(c.get("respond_by"))),
    )
    return {
        "attention": items(attention),
        "failed_lines": stuck_lines(items(attention), ("routing_failed",)),
        "held": items(held),
        "alerts": open_alerts,
        "waiting": stuck_lines(items(waiting), ("waiting_supplier",)),
        "lost": items(lost),
        "delayed": [d for d in items(delays) if d.get("reason") != "lost_in_transit"],
        "writebacks": items(writebacks),
        "complaints": open_complaints,
        "returns": [r for page in returns for r in items(page)],
        "problems": problems(*results),
    }


@router.get("/", response_class=HTMLResponse)
async def inbox(request: Request, user: SignedIn) -> Response:
    return render(request, "inbox.html", **await inbox_data(request))
