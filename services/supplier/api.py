"""Supplier service admin API: suppliers, offers (JSON and CSV), allocations, scorecards."""

from __future__ import annotations

import csv
import io
import statistics
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError
from sqlalchemy import delete, func, select, update

from services.supplier.settings import SupplierSettings
from services.supplier.store import Credentials, SupplierUnitOfWork
from services.supplier.tables import offer, supplier, supplier_order
from shared.db import aware
from shared.http import Conflict, NotFound, Unprocessable, check_api_key
from shared.money import minor_units
from shared.runtime import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["suppliers"])


def runtime_of(request: Request) -> ServiceRuntime[SupplierUnitOfWork]:
    runtime: ServiceRuntime[SupplierUnitOfWork] = request.app.state.runtime
    return runtime


async def _runtime(request: Request) -> ServiceRuntime[Any]:
    return runtime_of(request)  # async: no threadpool hop per request


Runtime = Annotated[ServiceRuntime[SupplierUnitOfWork], Depends(_runtime)]


def settings_of(runtime: Runtime) -> SupplierSettings:
    assert isinstance(runtime.settings, SupplierSettings)
    return runtime.settings


async def admin(runtime: Runtime, x_api_key: Annotated[str | None, Header()] = None) -> None:
    check_api_key(x_api_key, settings_of(runtime).api_key_set)


async def new_uow(runtime: Runtime) -> SupplierUnitOfWork:
    return runtime.uow()


Admin = Annotated[None, Depends(admin)]
UoW = Annotated[SupplierUnitOfWork, Depends(new_uow)]
_strict = ConfigDict(extra="forbid", str_strip_whitespace=True)
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")]


class CredentialsIn(BaseModel):
    model_config = _strict
    api_key: Annotated[str, Field(min_length=1, max_length=500)]
    webhook_secret: Annotated[str, Field(min_length=8, max_length=500)]


class SupplierIn(BaseModel):
    model_config = _strict
    name: Annotated[str, Field(min_length=1, max_length=200)]
    supplier_key: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    api_base_url: HttpUrl
    credentials: CredentialsIn
    priority: Annotated[int, Field(ge=1, le=10)] = 5
    ship_sla_hours: Annotated[float, Field(gt=0, le=24 * 60)] = 48.0
    active: bool = True
    rate_limit_per_s: Annotated[float, Field(gt=0, le=10_000)] | None = None


class SupplierPatch(BaseModel):
    model_config = _strict
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    api_base_url: HttpUrl | None = None
    credentials: CredentialsIn | None = None
    priority: Annotated[int, Field(ge=1, le=10)] | None = None
    ship_sla_hours: Annotated[float, Field(gt=0, le=24 * 60)] | None = None
    active: bool | None = None
    rate_limit_per_s: Annotated[float, Field(gt=0, le=10_000)] | None = None


class OfferIn(BaseModel):
    model_config = _strict
    sku: Sku
    supplier_sku: Sku
    unit_cost: Annotated[Decimal, Field(ge=0, le=Decimal(1_000_000), allow_inf_nan=False)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    stock: Annotated[int, Field(ge=0, le=10_000_000)]
    lead_time_hours: Annotated[float, Field(ge=0, le=24 * 365)]

    def precision_error(self) -> str | None:
        exponent = self.unit_cost.normalize().as_tuple().exponent
        places = minor_units(self.currency) + 2  # costs may carry two more decimals
        if isinstance(exponent, int) and -exponent > places:
            return f"{self.currency} costs have at most {places} decimals"
        return None


def render_supplier(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "supplier_key": row.supplier_key,
        "name": row.name,
        "api_base_url": row.api_base_url,
        "priority": row.priority,
        "ship_sla_hours": row.ship_sla_hours,
        "active": row.active,
        "rate_limit_per_s": row.rate_limit_per_s,
        "has_credentials": bool(row.credentials),
        "created_at": row.created_at.isoformat(),
    }


async def _supplier_or_404(uow: SupplierUnitOfWork, supplier_id: str) -> Any:
    row = await uow.supplier_row(supplier_id)
    if row is None:
        raise NotFound(f"supplier {supplier_id} not found")
    return row


@router.post("/suppliers", status_code=201, summary="Register a supplier")
async def create_supplier(body: SupplierIn, uow: UoW, _: Admin) -> dict[str, Any]:
    now = datetime.now(UTC)
    async with uow:
        taken = await uow.session.scalar(
            select(supplier.c.id).where(supplier.c.supplier_key == body.supplier_key)
        )
        if taken:
            raise Conflict(
                f"supplier_key {body.supplier_key} is taken", details={"supplier_id": taken}
            )
        supplier_id = f"sup_{uuid.uuid4().hex[:16]}"
        creds = Credentials(body.credentials.api_key, body.credentials.webhook_secret)
        await uow.session.execute(
            supplier.insert().values(
                id=supplier_id,
                supplier_key=body.supplier_key,
                name=body.name,
                api_base_url=str(body.api_base_url).rstrip("/"),
                credentials=uow.sealer.dump(creds),
                priority=body.priority,
                ship_sla_hours=body.ship_sla_hours,
                active=body.active,
                rate_limit_per_s=body.rate_limit_per_s,
                decided=0,
                accepted=0,
                shipped=0,
                shipped_on_time=0,
                exceptions=0,
                created_at=now,
                updated_at=now,
            )
        )
        await uow.commit()
        uow.directory.invalidate(supplier_id)
        return render_supplier(await uow.supplier_row(supplier_id))


@router.get("/suppliers", summary="All suppliers")
async def list_suppliers(uow: UoW, _: Admin) -> dict[str, Any]:
    async with uow:
        rows = await uow.session.execute(
            select(supplier).order_by(supplier.c.priority, supplier.c.id)
        )
        return {"items": [render_supplier(r) for r in rows], "next_cursor": None}


@router.get("/suppliers/{supplier_id}", summary="One supplier")
async def read_supplier(supplier_id: str, uow: UoW, _: Admin) -> dict[str, Any]:
    async with uow:
        return render_supplier(await _supplier_or_404(uow, supplier_id))


@router.patch("/suppliers/{supplier_id}", summary="Change a supplier")
async def patch_supplier(
    supplier_id: str, body: SupplierPatch, uow: UoW, _: Admin
) -> dict[str, Any]:
    changes = body.model_dump(exclude_unset=True, exclude={"credentials"})
    if "api_base_url" in changes and changes["api_base_url"] is not None:
        changes["api_base_url"] = str(changes["api_base_url"]).rstrip("/")
    for required in ("name", "api_base_url", "priority", "ship_sla_hours", "active"):
        if required in changes and changes[required] is None:
            raise Unprocessable(
                f"{required} cannot be null",
                details=[{"field": f"body.{required}", "reason": "cannot be null"}],
            )
    async with uow:
        await _supplier_or_404(uow, supplier_id)
        if body.credentials is not None:
            changes["credentials"] = uow.sealer.dump(
                Credentials(body.credentials.api_key, body.credentials.webhook_secret)
            )
        if changes:
            changes["updated_at"] = datetime.now(UTC)
            await uow.session.execute(
                update(supplier).where(supplier.c.id == supplier_id).values(**changes)
            )
        await uow.commit()
        uow.directory.invalidate(supplier_id)
        return render_supplier(await uow.supplier_row(supplier_id))


@router.put("/suppliers/{supplier_id}/offers", summary="Upsert offers by SKU (others are kept)")
async def put_offers(supplier_id: str, body: list[OfferIn], uow: UoW, _: Admin) -> dict[str, Any]:
    errors = [
        {"field": f"body.{i}.unit_cost", "reason": err}
        for i, o in enumerate(body)
        if (err := o.precision_error())
    ]
    seen: dict[str, int] = {}
    for i, o in enumerate(body):
        if o.sku in seen:
            errors.append({"field": f"body.{i}.sku", "reason": f"duplicate of item {seen[o.sku]}"})
        seen.setdefault(o.sku, i)
    if errors:
        raise Unprocessable(f"{errors[0]['field']}: {errors[0]['reason']}", details=errors)
    async with uow:
        await _supplier_or_404(uow, supplier_id)
        await uow.upsert_offers(_offer_rows([(supplier_id, o) for o in body]))
        await uow.commit()
    return {"upserted": len(body)}


def _offer_rows(rows: list[tuple[str, OfferIn]]) -> list[tuple[str, dict[str, Any]]]:
    return [(supplier_id, o.model_dump()) for supplier_id, o in rows]


@router.get("/suppliers/{supplier_id}/offers", summary="A supplier's offers")
async def list_offers(supplier_id: str, uow: UoW, _: Admin) -> dict[str, Any]:
    async with uow:
        await _supplier_or_404(uow, supplier_id)
        rows = await uow.session.execute(
            select(offer).where(offer.c.supplier_id == supplier_id).order_by(offer.c.sku)
        )
        items = [
            {
                "sku": r.sku,
                "supplier_sku": r.supplier_sku,
                "unit_cost": str(Decimal(r.unit_cost).normalize()),
                "currency": r.currency,
                "stock": r.stock,
                "lead_time_hours": r.lead_time_hours,
            }
            for r in rows
        ]
    return {"items": items, "next_cursor": None}


@router.delete("/suppliers/{supplier_id}/offers/{sku}", summary="Remove one offer")
async def delete_offer(supplier_id: str, sku: str, uow: UoW, _: Admin) -> dict[str, Any]:
    async with uow:
        result = await uow.session.execute(
            delete(offer).where(offer.c.supplier_id == supplier_id, offer.c.sku == sku)
        )
        if not getattr(result, "rowcount", 0):
            raise NotFound(f"supplier {supplier_id} has no offer for {sku}")
        await uow.commit()
    return {"deleted": sku}


CSV_COLUMNS = [
    "sku",
    "supplier_id",
    "supplier_sku",
    "unit_cost",
    "currency",
    "stock",
    "lead_time_hours",
]


@router.post(
    "/offers/import",
    summary="Import offers from CSV: every row is checked and nothing is imported if one is bad",
    openapi_extra={
        "requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}
    },
)
async def import_offers(request: Request, uow: UoW, _: Admin) -> dict[str, Any]:
    raw = await request.body()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise Unprocessable(
            "the file is not UTF-8", details=[{"line": 0, "column": None, "reason": "not UTF-8"}]
        ) from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    if header != CSV_COLUMNS:
        raise Unprocessable(
            f"header must be {','.join(CSV_COLUMNS)}",
            details=[
                {
                    "line": 1,
                    "column": None,
                    "reason": f"expected header {','.join(CSV_COLUMNS)}, got {','.join(header)}",
                }
            ],
        )
    errors: list[dict[str, Any]] = []
    rows: list[tuple[str, OfferIn]] = []
    seen: dict[tuple[str, str], int] = {}
    async with uow:
        known = {r.id for r in await uow.session.execute(select(supplier.c.id))}
        for number, record in enumerate(reader, start=2):
            cells = {k.strip(): (v or "").strip() for k, v in record.items() if k is not None}
            if None in record:
                errors.append({"line": number, "column": None, "reason": "more cells than columns"})
                continue
            if cells["supplier_id"] not in known:
                errors.append(
                    {
                        "line": number,
                        "column": "supplier_id",
                        "reason": f"unknown supplier {cells['supplier_id']!r}",
                    }
                )
            try:
                item = OfferIn.model_validate(
                    {k: v for k, v in cells.items() if k != "supplier_id"}
                )
            except ValidationError as exc:
                errors += [
                    {"line": number, "column": str(e["loc"][0]), "reason": e["msg"]}
                    for e in exc.errors()
                ]
                continue
            if err := item.precision_error():
                errors.append({"line": number, "column": "unit_cost", "reason": err})
            key = (cells["supplier_id"], item.sku)
            if key in seen:
                errors.append(
                    {"line": number, "column": "sku", "reason": f"duplicate of line {seen[key]}"}
                )
            seen.setdefault(key, number)
            rows.append((cells["supplier_id"], item))
        if errors:
            first = errors[0]
            raise Unprocessable(
                f"line {first['line']}, column {first['column']}: {first['reason']}; "
                "nothing imported",
                details=errors,
            )
        if not rows:
            raise Unprocessable(
                "the file has no rows", details=[{"line": 2, "column": None, "reason": "no rows"}]
            )
        await uow.upsert_offers(_offer_rows(rows))
        await uow.commit()
    return {"imported": len(rows)}


@router.get("/allocations", summary="Who got which line of an order, at what cost, in what state")
async def allocations(
    uow: UoW, _: Admin, order_id: Annotated[str, Query(min_length=1, max_length=64)]
) -> dict[str, Any]:
    async with uow:
        rows = await uow.allocations_for_order(order_id)
    return {
        "items": [
            {
                "order_id": r.order_id,
                "line_id": r.line_id,
                "sku": r.sku,
                "quantity": r.quantity,
                "supplier_id": r.supplier_id,
                "supplier_order_id": r.supplier_order_id,
                "supplier_order_ref": r.supplier_order_ref,
                "supplier_sku": r.supplier_sku,
                "unit_cost": str(Decimal(r.unit_cost).normalize()),
                "currency": r.currency,
                "state": r.state,
            }
            for r in rows
        ],
        "next_cursor": None,
    }


@router.get("/suppliers/{supplier_id}/scorecard", summary="A supplier's measured performance")
async def scorecard(supplier_id: str, uow: UoW, _: Admin) -> dict[str, Any]:
    async with uow:
        await _supplier_or_404(uow, supplier_id)
        counts = (await uow.counters([supplier_id]))[supplier_id]
        times = await uow.session.execute(
            select(supplier_order.c.created_at, supplier_order.c.confirmed_at)
            .where(
                supplier_order.c.supplier_id == supplier_id,
                supplier_order.c.confirmed_at.is_not(None),
            )
            .order_by(supplier_order.c.confirmed_at.desc())
            .limit(5000)
        )
        confirm_s = [((aware(c) or c) - (aware(a) or a)).total_seconds() for a, c in times]
        orders = await uow.session.scalar(
            select(func.count())
            .select_from(supplier_order)
            .where(supplier_order.c.supplier_id == supplier_id)
        )
    return {
        "supplier_id": supplier_id,
        "orders": int(orders or 0),
        "decided": counts["decided"],
        "accepted": counts["accepted"],
        "confirmation_rate": (
            round(counts["accepted"] / counts["decided"], 4) if counts["decided"] else None
        ),
        "median_confirm_seconds": round(statistics.median(confirm_s), 3) if confirm_s else None,
        "shipped": counts["shipped"],
        "on_time_ship_rate": (
            round(counts["shipped_on_time"] / counts["shipped"], 4) if counts["shipped"] else None
        ),
        "exceptions": counts["exceptions"],
    }
