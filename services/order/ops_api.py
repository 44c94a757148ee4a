"""Order-service reads for the ops console (X-API-Key): orders by customer e-mail (blind index),
open delays, and failed marketplace write-backs with a way to try them again."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from services.order.api import ApiKey, UoW
from services.order.handlers import ops
from services.order.schemas import OrderPage, render_order, rfc3339
from shared.db import aware

router = APIRouter(prefix="/v1", tags=["ops"])


class OrderSearchIn(BaseModel):
    """In a body, not the URL, so the e-mail stays out of access logs and browser history."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    email: Annotated[EmailStr, Field(max_length=254)]
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    cursor: Annotated[str | None, Field(max_length=500)] = None


@router.post(
    "/orders/search",
    response_model=OrderPage,
    summary="A customer's orders by e-mail, newest first (matched on the e-mail's blind index)",
)
async def search_orders(body: OrderSearchIn, uow: UoW, _: ApiKey) -> dict[str, Any]:
    orders, next_cursor = await ops.orders_by_email(str(body.email), body.limit, body.cursor, uow)
    return {"items": [render_order(o) for o in orders], "next_cursor": next_cursor}


@router.get("/delays", summary="Delays of orders still delayed, newest first (one per supplier)")
async def delays(
    uow: UoW,
    _: ApiKey,
    reason: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    found = await ops.open_delays(reason, limit, uow)
    items = [
        {
            "order_id": d.order_id,
            "supplier_id": d.supplier_id,
            "reason": d.reason,
            "severity": d.severity,
            "time": rfc3339(d.time),
            "expected_by": d.expected_by,
        }
        for d in found
    ]
    return {"items": items, "next_cursor": None}


@router.get("/writebacks", summary="Marketplace write-backs by status (failed: gave up)")
async def writebacks(
    uow: UoW,
    _: ApiKey,
    status: Literal["failed"] = "failed",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    rows = await ops.failed_writebacks(limit, uow)
    items = [
        {
            "id": r["id"],
            "order_id": r["order_id"],
            "operation": r["kind"],
            "shop_id": r["shop_id"],
            "external_id": r["external_id"],
            "status": r["status"],
            "attempts": r["attempts"],
            "last_error": r["last_error"],
            "created_at": rfc3339(aware(r["created_at"])),
        }
        for r in rows
    ]
    return {"items": items, "next_cursor": None}


@router.post(
    "/writebacks/{task_id}/retry",
    status_code=202,
    summary="Try a failed write-back again (409 unless it failed)",
)
async def retry_writeback(task_id: int, uow: UoW, _: ApiKey) -> dict[str, Any]:
    await ops.retry_writeback(task_id, uow)
    return {"id": task_id, "status": "pending"}
