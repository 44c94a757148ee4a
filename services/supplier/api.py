"""Supplier service admin API: HTTP to commands and results to JSON; the handlers decide.

Domain errors are mapped to statuses once (`services.supplier.errors`), not per route.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request

from services.supplier.domain import Offer, Scorecard, Supplier
from services.supplier.domain.quality import Chargeback
from services.supplier.handlers import commands, manual
from services.supplier.schemas import OfferIn, RouteLineIn, SupplierIn, SupplierPatch
from services.supplier.settings import SupplierSettings
from services.supplier.store import AllocationView, SupplierUnitOfWork
from shared.http import Unprocessable, check_api_key
from shared.money import minor_units
from shared.runtime import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["suppliers"])


def runtime_of(request: Request) -> ServiceRuntime[SupplierUnitOfWork]:
    runtime: ServiceRuntime[SupplierUnitOfWork] = request.app.state.runtime
    return runtime


def settings_of(request: Request) -> SupplierSettings:
    settings: SupplierSettings = request.app.state.settings
    return settings


async def admin(request: Request, x_api_key: Annotated[str | None, Header()] = None) -> None:
    check_api_key(x_api_key, settings_of(request).admin_key_set)


async def new_uow(request: Request) -> SupplierUnitOfWork:
    return runtime_of(request).uow()  # async: no threadpool hop per request


Admin = Annotated[None, Depends(admin)]
UoW = Annotated[SupplierUnitOfWork, Depends(new_uow)]


def render_supplier(s: Supplier) -> dict[str, Any]:
    return {
        "id": s.id,
        "supplier_key": s.supplier_key,
        "name": s.name,
        "api_base_url": s.api_base_url,
        "priority": s.priority,
        "ship_sla_hours": s.ship_sla_hours,
        "active": s.active,
        "rate_limit_per_s": s.rate_limit_per_s,
        "has_credentials": s.has_credentials,
        "created_at": s.created_at.isoformat(),
    }


def _money(value: Decimal) -> str:
    return str(value.normalize())


def render_offer(o: Offer) -> dict[str, Any]:
    return {
        "sku": o.sku,
        "supplier_sku": o.supplier_sku,
        "unit_cost": _money(o.unit_cost),
        "currency": o.currency,
        "stock": o.stock,
        "lead_time_hours": o.lead_time_hours,
        "external_ids": list(o.external_ids or ()),
    }


def render_allocation(a: AllocationView) -> dict[str, Any]:
    return {**asdict(a), "unit_cost": _money(a.unit_cost)}


def _exact(amount: Decimal, currency: str) -> str:
    """The amount at least at the currency's precision, never rounded: `6.25`, `100.00`."""
    value = amount.normalize()
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent < minor_units(currency):
        value = value.quantize(Decimal(1).scaleb(-minor_units(currency)))
    return format(value, "f")


def render_scorecard(card: Scorecard) -> dict[str, Any]:
    out = asdict(card)
    totals = card.chargebacks.totals if card.chargebacks else {}
    out["chargebacks"] = {
        "count": card.chargebacks.count if card.chargebacks else 0,
        "totals": {cur: _exact(total, cur) for cur, total in sorted(totals.items())},
    }
    return out


def render_chargeback(c: Chargeback) -> dict[str, Any]:
    return {
        "refund_id": c.refund_id,
        "supplier_id": c.supplier_id,
        "order_id": c.order_id,
        "return_id": c.return_id,
        "amount": _exact(c.amount, c.currency),
        "currency": c.currency,
        "reason": c.reason,
        "issued_at": c.issued_at.isoformat(),
    }


def _cursor(c: Chargeback) -> str:
    raw = json.dumps([c.issued_at.isoformat(), c.refund_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _after(cursor: str | None) -> tuple[datetime, str] | None:
    if cursor is None:
        return None
    try:
        at, refund_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(at), str(refund_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise Unprocessable(
            "cursor is not one this API issued",
            details=[{"field": "query.cursor", "reason": "not a cursor from a previous page"}],
        ) from exc


async def _reachable(request: Request, url: Any) -> None:
    """422 for an `api_base_url` at an internal address while the egress guard is on
    (production): the supplier's bearer key would be sent into our own network."""
    if url is None:
        return
    if why := await request.app.state.egress.check_url(str(url)):
        raise Unprocessable(
            f"api_base_url: {why}",
            details=[
                {
                    "field": "body.api_base_url",
                    "reason": f"internal address refused ({why}); an on-premise supplier's host "
                    "goes in DROPSHIP_SUPPLIER_ALLOWED_HOSTS",
                }
            ],
        )


@router.post("/suppliers", status_code=201, summary="Register a supplier")
async def create_supplier(request: Request, body: SupplierIn, uow: UoW, _: Admin) -> dict[str, Any]:
    await _reachable(request, body.api_base_url)
    return render_supplier(await commands.register_supplier(uow, body.to_command()))


@router.get("/suppliers", summary="All suppliers")
async def list_suppliers(uow: UoW, _: Admin) -> dict[str, Any]:
    items = await commands.list_suppliers(uow)
    return {"items": [render_supplier(s) for s in items], "next_cursor": None}


@router.get("/suppliers/{supplier_id}", summary="One supplier")
async def read_supplier(supplier_id: str, uow: UoW, _: Admin) -> dict[str, Any]:
    return render_supplier(await commands.get_supplier(uow, supplier_id))


@router.patch("/suppliers/{supplier_id}", summary="Change a supplier")
async def patch_supplier(
    request: Request, supplier_id: str, body: SupplierPatch, uow: UoW, _: Admin
) -> dict[str, Any]:
    if nulled := body.nulled():
        raise Unprocessable(
            f"{nulled[0]} cannot be null",
            details=[{"field": f"body.{f}", "reason": "cannot be null"} for f in nulled],
        )
    await _reachable(request, body.api_base_url)
    return render_supplier(await commands.change_supplier(uow, supplier_id, body.to_command()))


@router.put("/suppliers/{supplier_id}/offers", summary="Upsert offers by SKU (others are kept)")
async def put_offers(supplier_id: str, body: list[OfferIn], uow: UoW, _: Admin) -> dict[str, Any]:
    offers = [o.to_offer(supplier_id) for o in body]
    return {"upserted": await commands.upsert_offers(uow, supplier_id, offers)}


@router.get("/suppliers/{supplier_id}/offers", summary="A supplier's offers")
async def list_offers(supplier_id: str, uow: UoW, _: Admin) -> dict[str, Any]:
    offers = await commands.list_offers(uow, supplier_id)
    return {"items": [render_offer(o) for o in offers], "next_cursor": None}


@router.delete("/suppliers/{supplier_id}/offers/{sku}", summary="Remove one offer")
async def delete_offer(supplier_id: str, sku: str, uow: UoW, _: Admin) -> dict[str, Any]:
    await commands.delete_offer(uow, supplier_id, sku)
    return {"deleted": sku}


@router.post(
    "/offers/import",
    summary="Import offers from CSV: every row is checked and nothing is imported if one is bad",
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def import_offers(request: Request, uow: UoW, _: Admin) -> dict[str, Any]:
    return {"imported": await commands.import_offers(uow, await request.body())}


@router.get("/allocations", summary="Who got which line of an order, at what cost, in what state")
async def allocations(
    uow: UoW, _: Admin, order_id: Annotated[str, Query(min_length=1, max_length=64)]
) -> dict[str, Any]:
    items = await commands.allocations(uow, order_id)
    return {"items": [render_allocation(a) for a in items], "next_cursor": None}


@router.get("/suppliers/{supplier_id}/scorecard", summary="A supplier's measured performance")
async def scorecard(supplier_id: str, uow: UoW, _: Admin) -> dict[str, Any]:
    return render_scorecard(await commands.scorecard(uow, supplier_id))


@router.get(
    "/suppliers/{supplier_id}/chargebacks",
    summary="Refunds charged back to the supplier (cost borne by it), newest first",
)
async def chargebacks(
    supplier_id: str,
    uow: UoW,
    _: Admin,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    found = await commands.chargebacks(uow, supplier_id, limit + 1, _after(cursor))
    page = found[:limit]
    next_cursor = _cursor(page[-1]) if len(found) > limit else None
    return {"items": [render_chargeback(c) for c in page], "next_cursor": next_cursor}


@router.post(
    "/orders/{order_id}/lines/{line_id}/route",
    status_code=202,
    summary="Route a needs_attention or waiting_supplier line again (to anyone, or to one)",
)
async def route_line(
    order_id: str,
    line_id: str,
    uow: UoW,
    _: Admin,
    body: Annotated[RouteLineIn | None, Body()] = None,
) -> dict[str, Any]:
    wanted = body or RouteLineIn()
    routed = await manual.route_line(
        uow,
        order_id,
        line_id,
        wanted.supplier_id,
        accept_negative_margin=wanted.accept_negative_margin,
    )
    return asdict(routed)
