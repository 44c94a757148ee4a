"""After-sales in the console: returns, refunds and complaints, through the order service's
after-sales API (DESIGN §6 "After-sales"). Pages for the lists, form posts for every action."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from services.console.clients import ApiResult
from services.console.domain import User
from services.console.inbox import items, problems
from services.console.stepup import require_fresh_factor
from services.console.web import act, acting_user, back, console_of, current_user, render

router = APIRouter()
SignedIn = Annotated[User, Depends(current_user)]
RETURN_STATUSES = ("requested", "authorized", "received", "refunded", "rejected")
RETURN_REASONS = (
    "damaged_in_transit",
    "not_as_described",
    "wrong_item",
    "not_received",
    "changed_mind",
)
TIERS = ("normal", "urgent", "major")
_IDEM = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _quantities(form: FormData) -> list[dict[str, Any]]:
    """`qty-<line id>` fields with a quantity: `[{"line_id", "quantity"}]` (bad numbers are
    sent as they are, so the order service names the field)."""
    out: list[dict[str, Any]] = []
    for key, value in form.multi_items():
        if key.startswith("qty-") and isinstance(value, str) and value.strip():
            raw = value.strip()
            out.append({"line_id": key[4:], "quantity": int(raw) if raw.isdigit() else raw})
    return [q for q in out if q["quantity"] != 0]


async def _naming(field: str, code: str, call: Awaitable[ApiResult]) -> ApiResult:
    """A refusal the service words without a field list (a 409 `code`), shown against the form
    field it is about, the way a 422 names its fields."""
    result = await call
    body = result.body if isinstance(result.body, dict) else {}
    error = body.get("error")
    error = error if isinstance(error, dict) else {}
    if result.ok or result.details or error.get("code") != code:
        return result
    reason = str(error.get("message") or result.message)
    return dataclasses.replace(result, details=[{"field": field, "reason": reason}])


def _note(form: FormData) -> dict[str, str]:
    return {"note": note} if (note := _text(form, "note")) else {}


# -- pages ----------------------------------------------------------------------------------
@router.get("/returns", response_class=HTMLResponse)
async def returns_page(
    request: Request,
    user: SignedIn,
    status: Annotated[str, Query(max_length=16)] = "requested",
) -> Response:
    wanted = status if status in RETURN_STATUSES else None
    found = await console_of(request).backends.get("order", "/v1/returns", status=wanted, limit=200)
    return render(
        request,
        "returns.html",
        returns=items(found),
        status=wanted or "",
        statuses=RETURN_STATUSES,
        problems=problems(found),
    )


@router.get("/complaints", response_class=HTMLResponse)
async def complaints_page(
    request: Request,
    user: SignedIn,
    open_only: Annotated[str, Query(alias="open", max_length=5)] = "true",
) -> Response:
    flag = {"true": "true", "false": "false"}.get(open_only)
    found = await console_of(request).backends.get("order", "/v1/complaints", open=flag, limit=200)
    return render(
        request,
        "complaints.html",
        complaints=items(found),
        open_only=open_only,
        problems=problems(found),
    )


async def order_aftersales(request: Request, order_id: str) -> dict[str, Any]:
    """What the order page shows of the order's returns, refunds and complaints."""
    b = console_of(request).backends
    returns, refunds, complaints = await asyncio.gather(
        b.get("order", "/v1/returns", order_id=order_id, limit=100),
        b.get("order", f"/v1/orders/{order_id}/refunds"),
        b.get("order", "/v1/complaints", order_id=order_id, limit=100),
    )
    return {
        "order_returns": items(returns),
        "order_refunds": items(refunds),
        "order_complaints": items(complaints),
        "return_reasons": RETURN_REASONS,
        "tiers": TIERS,
        "refund_key": uuid.uuid4().hex,
        "aftersales_problems": problems(returns, refunds, complaints),
    }


# -- returns --------------------------------------------------------------------------------
@router.post("/orders/{order_id}/returns")
async def open_return(request: Request, order_id: str) -> Response:
    user, form = await acting_user(request)
    body: dict[str, Any] = {
        "lines": _quantities(form),
        "reason": _text(form, "reason"),
        **_note(form),
    }
    b = console_of(request).backends
    await act(
        request,
        user,
        "open return",
        order_id,
        b.post("order", f"/v1/orders/{order_id}/returns", body),
    )
    return back(request, f"/orders/{order_id}")


async def _return_step(request: Request, return_id: str, step: str, action: str) -> Response:
    user, form = await acting_user(request)
    b = console_of(request).backends
    await act(
        request,
        user,
        action,
        return_id,
        b.post("order", f"/v1/returns/{return_id}/{step}", _note(form)),
    )
    return back(request, "/returns")


@router.post("/returns/{return_id}/authorize")
async def authorize_return(request: Request, return_id: str) -> Response:
    return await _return_step(request, return_id, "authorize", "authorize return")


@router.post("/returns/{return_id}/reject")
async def reject_return(request: Request, return_id: str) -> Response:
    return await _return_step(request, return_id, "reject", "reject return")


@router.post("/returns/{return_id}/receive")
async def receive_return(request: Request, return_id: str) -> Response:
    return await _return_step(request, return_id, "receive", "receive return")


# -- refunds --------------------------------------------------------------------------------
@router.post("/orders/{order_id}/refunds")
async def issue_refund(request: Request, order_id: str) -> Response:
    """One refund per rendered form: the form carries its Idempotency-Key, so a double click
    or a resubmitted page refunds once."""
    user, form = await acting_user(request)
    await require_fresh_factor(request, user, form, "issue refund")
    body: dict[str, Any] = {}
    if amount := _text(form, "amount"):
        body["amount"] = amount
    if lines := _quantities(form):
        body["lines"] = lines
    if reason := _text(form, "reason"):
        body["reason"] = reason
    if return_id := _text(form, "return_id"):
        body["return_id"] = return_id
    key = _text(form, "idempotency_key")
    key = key if _IDEM.match(key) else uuid.uuid4().hex
    b = console_of(request).backends
    await act(
        request,
        user,
        "issue refund",
        order_id,
        _naming(
            "amount",
            "refund_exceeds_paid",
            b.call(
                "order",
                "POST",
                f"/v1/orders/{order_id}/refunds",
                json=body,
                headers={"Idempotency-Key": f"console-{key}"},
            ),
        ),
    )
    return back(request, f"/orders/{order_id}")


# -- complaints -----------------------------------------------------------------------------
@router.post("/complaints")
async def file_complaint(request: Request) -> Response:
    user, form = await acting_user(request)
    order_id = _text(form, "order_id")
    body = {"order_id": order_id, "tier": _text(form, "tier"), "summary": _text(form, "summary")}
    b = console_of(request).backends
    await act(request, user, "file complaint", order_id, b.post("order", "/v1/complaints", body))
    return back(request, "/complaints")


@router.post("/complaints/{complaint_id}/respond")
async def respond(request: Request, complaint_id: str) -> Response:
    user, form = await acting_user(request)
    body = {"by": user.email, "message": _text(form, "message")}
    b = console_of(request).backends
    path = f"/v1/complaints/{complaint_id}/respond"
    await act(request, user, "respond to complaint", complaint_id, b.post("order", path, body))
    return back(request, "/complaints")


@router.post("/complaints/{complaint_id}/resolve")
async def resolve(request: Request, complaint_id: str) -> Response:
    user, form = await acting_user(request)
    body = {"by": user.email, "resolution": _text(form, "resolution")}
    b = console_of(request).backends
    path = f"/v1/complaints/{complaint_id}/resolve"
    await act(request, user, "resolve complaint", complaint_id, b.post("order", path, body))
    return back(request, "/complaints")
