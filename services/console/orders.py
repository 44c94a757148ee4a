"""Orders: search (id, marketplace order number, customer e-mail, status, dates) and the order
page with everything an operator acts on."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.aftersales import order_aftersales
from services.console.clients import ApiResult
from services.console.domain import User
from services.console.inbox import REROUTABLE, items, problems
from services.console.web import audit, checked_form, console_of, current_user, render

router = APIRouter()
SignedIn = Annotated[User, Depends(current_user)]
STATUSES = (
    "placed",
    "routed",
    "needs_attention",
    "on_hold",
    "confirmed",
    "shipped",
    "delivered",
    "cancelled",
)


def _day(raw: str) -> date | None:
    try:
        return date.fromisoformat(raw) if raw.strip() else None
    except ValueError:
        return None


def _open(request: Request, order_id: str) -> Response:
    """To the order's page: an htmx-boosted search is told to navigate (so the address bar
    shows the order), a plain one is redirected."""
    url = f"/orders/{quote(order_id, safe='')}"
    if request.headers.get("HX-Request"):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def _listing(
    request: Request,
    found: ApiResult,
    status: str = "",
    day_from: date | None = None,
    day_to: date | None = None,
    q: str = "",
    searched: bool = False,
) -> Response:
    return render(
        request,
        "orders.html",
        status_code=200 if found.ok or found.status == 404 else found.status,
        orders=items(found),
        error=None if found.ok else found.message,
        details=found.details,
        statuses=STATUSES,
        status=status,
        day_from=day_from,
        day_to=day_to,
        q=q,
        searched=searched,
    )


@router.get("/orders", response_class=HTMLResponse)
async def orders(
    request: Request,
    user: SignedIn,
    q: Annotated[str, Query(max_length=128)] = "",
    status: Annotated[str, Query(max_length=32)] = "",
    raw_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    raw_to: Annotated[str, Query(alias="to", max_length=10)] = "",
) -> Response:
    """A plain GET form: empty date fields arrive as empty strings and mean "any"."""
    b = console_of(request).backends
    day_from, day_to = _day(raw_from), _day(raw_to)
    bad = [
        {"field": name, "reason": "not a date (YYYY-MM-DD)"}
        for name, raw, day in (("from", raw_from, day_from), ("to", raw_to, day_to))
        if raw.strip() and day is None
    ]
    if bad:  # refused, not silently read as "any day"
        refused = ApiResult(422, message="422: a date field is not a date", details=bad)
        return _listing(request, refused, status, day_from, day_to)
    if wanted := q.strip():
        # an order id, else a marketplace order number: one match opens it; two shops may
        # both have used the number, and then the listing shows each with its shop
        one = await b.get("order", f"/v1/orders/{quote(wanted, safe='')}")
        if one.ok:
            return _open(request, wanted)
        by_external = await b.get("order", "/v1/orders", external_id=wanted, limit=100)
        found = items(by_external)
        if len(found) == 1:
            return _open(request, str(found[0]["id"]))
        return _listing(request, by_external, q=wanted, searched=True)
    created_from = datetime.combine(day_from, datetime.min.time(), UTC) if day_from else None
    created_to = (
        datetime.combine(day_to + timedelta(days=1), datetime.min.time(), UTC) if day_to else None
    )
    found_page = await b.get(
        "order",
        "/v1/orders",
        status=status or None,
        created_from=created_from.isoformat() if created_from else None,
        created_to=created_to.isoformat() if created_to else None,
        limit=100,
    )
    return _listing(request, found_page, status, day_from, day_to)


@router.post("/orders/search", response_class=HTMLResponse)
async def search_by_email(request: Request, user: SignedIn) -> Response:
    """By customer e-mail, in a POST body end to end (never in a URL or a log line); viewers
    may search, and the audit log records that someone did, not the address."""
    form = await checked_form(request)
    raw = form.get("email")
    email = raw.strip() if isinstance(raw, str) else ""
    found = await console_of(request).backends.post(
        "order", "/v1/orders/search", {"email": email, "limit": 100}
    )
    await audit(
        request,
        user,
        "search orders by e-mail",
        "-",
        "ok" if found.ok else "error",
        f"{len(items(found))} orders" if found.ok else found.message,
    )
    return _listing(request, found, searched=True)


@router.get("/orders/{order_id}", response_class=HTMLResponse)
async def order_page(
    request: Request,
    user: SignedIn,
    order_id: str,
    return_id: Annotated[str, Query(max_length=64)] = "",
) -> Response:
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
    after = await order_aftersales(request, order_id)
    body: dict[str, Any] = order.body
    holds = body.get("holds") or []
    return render(
        request,
        "order.html",
        order=body,
        timeline=items(timeline),
        allocations=items(allocations),
        notices=items(notices),
        suppliers=items(suppliers),
        problems=problems(timeline, allocations, notices),
        **after,
        refund_return_id=return_id,
        reroutable=REROUTABLE,
        releasable=any(h.get("reason") != "address_invalid" for h in holds),
        closed=body.get("status") in ("cancelled", "shipped", "delivered"),
    )
