"""Every change the console makes: a CSRF-checked form post by an operator, audited, via an API."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.datastructures import FormData, UploadFile

from services.console.pages import suppliers_view
from services.console.stepup import require_fresh_factor
from services.console.web import act, acting_user, audit, back, console_of

router = APIRouter()


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


@router.post("/alerts/{alert_id}/ack")
async def ack_alert(request: Request, alert_id: str) -> Response:
    user, _ = await acting_user(request)
    b = console_of(request).backends
    await act(
        request,
        user,
        "acknowledge alert",
        alert_id,
        b.post("notify", f"/v1/alerts/{alert_id}/ack", {"by": user.email}),
    )
    return back(request, "/alerts")


@router.post("/orders/{order_id}/cancel")
async def cancel_order(request: Request, order_id: str) -> Response:
    user, form = await acting_user(request)
    await require_fresh_factor(request, user, form, "cancel order")
    body = {"reason": _text(form, "reason")} if _text(form, "reason") else None
    b = console_of(request).backends
    await act(
        request,
        user,
        "cancel order",
        order_id,
        b.post("order", f"/v1/orders/{order_id}/cancel", body),
    )
    return back(request, f"/orders/{order_id}")


@router.post("/orders/{order_id}/hold")
async def hold_order(request: Request, order_id: str) -> Response:
    user, form = await acting_user(request)
    body: dict[str, Any] = {"reason": "manual"}
    if note := _text(form, "note"):
        body["note"] = note
    b = console_of(request).backends
    await act(
        request, user, "hold order", order_id, b.post("order", f"/v1/orders/{order_id}/hold", body)
    )
    return back(request, f"/orders/{order_id}")


@router.post("/orders/{order_id}/release")
async def release_order(request: Request, order_id: str) -> Response:
    user, _ = await acting_user(request)
    b = console_of(request).backends
    await act(
        request, user, "release order", order_id, b.post("order", f"/v1/orders/{order_id}/release")
    )
    return back(request, f"/orders/{order_id}")


ADDRESS_FIELDS = ("line1", "line2", "city", "region", "postal_code", "country", "phone")


@router.post("/orders/{order_id}/address")
async def fix_address(request: Request, order_id: str) -> Response:
    user, form = await acting_user(request)
    body = {f: _text(form, f) for f in ADDRESS_FIELDS if _text(form, f)}
    if "country" in body:
        body["country"] = body["country"].upper()
    b = console_of(request).backends
    await act(
        request,
        user,
        "fix address",
        order_id,
        b.call("order", "PUT", f"/v1/orders/{order_id}/shipping-address", json=body),
    )
    return back(request, f"/orders/{order_id}")


@router.post("/orders/{order_id}/lines/{line_id}/route")
async def reroute_line(request: Request, order_id: str, line_id: str) -> Response:
    user, form = await acting_user(request)
    body = {"supplier_id": _text(form, "supplier_id")} if _text(form, "supplier_id") else {}
    b = console_of(request).backends
    await act(
        request,
        user,
        "re-route line",
        f"{order_id}/{line_id}",
        b.post("supplier", f"/v1/orders/{order_id}/lines/{line_id}/route", body),
    )
    return back(request, f"/orders/{order_id}")


@router.post("/writebacks/{task_id}/retry")
async def retry_writeback(request: Request, task_id: int) -> Response:
    user, _ = await acting_user(request)
    b = console_of(request).backends
    await act(
        request,
        user,
        "retry write-back",
        str(task_id),
        b.post("order", f"/v1/writebacks/{task_id}/retry"),
    )
    return back(request, "/")


@router.post("/notifications/{notification_id}/retry")
async def resend_notice(request: Request, notification_id: str) -> Response:
    user, _ = await acting_user(request)
    b = console_of(request).backends
    await act(
        request,
        user,
        "resend notice",
        notification_id,
        b.post("notify", f"/v1/notifications/{notification_id}/retry"),
    )
    return back(request)


@router.post("/suppliers/{supplier_id}")
async def edit_supplier(request: Request, supplier_id: str) -> Response:
    user, form = await acting_user(request)
    body: dict[str, Any] = {"active": form.get("active") == "on"}
    for name in ("priority", "ship_sla_hours"):
        raw = _text(form, name)
        if raw:
            body[name] = int(raw) if raw.lstrip("-").isdigit() else raw
    b = console_of(request).backends
    await act(
        request,
        user,
        "edit supplier",
        supplier_id,
        b.call("supplier", "PATCH", f"/v1/suppliers/{supplier_id}", json=body),
    )
    return back(request, f"/suppliers/{supplier_id}")


@router.post("/offers/import")
async def import_offers(request: Request) -> Response:
    """Upload a CSV: on any bad row nothing is imported and every problem is listed."""
    user, form = await acting_user(request)
    upload = form.get("file")
    raw = await upload.read() if isinstance(upload, UploadFile) else b""
    name = upload.filename if isinstance(upload, UploadFile) and upload.filename else "-"
    result = await console_of(request).backends.call(
        "supplier",
        "POST",
        "/v1/offers/import",
        content=raw,
        headers={"Content-Type": "text/csv"},
    )
    await audit(
        request,
        user,
        "import offers",
        name,
        "ok" if result.ok else "error",
        result.message or f"{(result.body or {}).get('imported')} offers",
    )
    if result.ok:
        imported = (result.body or {}).get("imported")
        request.state.session.say("ok", f"{name}: {imported} offers imported")
        return back(request, "/suppliers")
    return await suppliers_view(request, csv_errors=result.details, csv_message=result.message)
