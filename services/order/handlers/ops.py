"""Reads and fixes for the ops console: a customer's orders, open delays, failed write-backs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.order.domain import Order
from services.order.repository import OrderFilter
from services.order.shops.domain import WritebackNotFailed, WritebackNotFound
from services.order.shops.handlers import queue
from services.order.store import OrderUnitOfWork


async def orders_by_email(
    email: str, limit: int, cursor: str | None, uow: OrderUnitOfWork
) -> tuple[list[Order], str | None]:
    """A customer's orders found by the e-mail's blind index (under every configured key);
    the e-mail itself is neither stored in the clear nor logged."""
    async with uow:
        flt = OrderFilter(email_indexes=tuple(uow.cipher.email_indexes(email)))
        return await uow.orders.list(flt, limit, cursor)


@dataclass(frozen=True)
class OpenDelay:
    order_id: str
    supplier_id: str
    reason: str
    severity: str
    time: datetime
    expected_by: str | None


async def open_delays(reason: str | None, limit: int, uow: OrderUnitOfWork) -> list[OpenDelay]:
    """The newest delay per order and supplier, of orders still delayed (newest first)."""
    out: list[OpenDelay] = []
    seen: set[tuple[str, str]] = set()
    async with uow:
        rows = await uow.timeline.delays_of_delayed_orders(limit * 10)
    for order_id, entry in rows:
        data: dict[str, Any] = entry.data or {}
        key = (order_id, str(data.get("supplier_id")))
        if key in seen:
            continue
        seen.add(key)
        if reason and data.get("reason") != reason:
            continue
        out.append(
            OpenDelay(
                order_id,
                str(data.get("supplier_id", "")),
                str(data.get("reason", "")),
                str(data.get("severity", "")),
                entry.time,
                data.get("expected_by"),
            )
        )
        if len(out) >= limit:
            break
    return out


async def failed_writebacks(limit: int, uow: OrderUnitOfWork) -> list[dict[str, Any]]:
    async with uow:
        return await queue(uow).listed("failed", limit)


async def retry_writeback(task_id: int, uow: OrderUnitOfWork) -> None:
    """Put a failed write-back back in the queue (`WritebackNotFound`, `WritebackNotFailed`)."""
    async with uow:
        if not await queue(uow).try_again(task_id):
            status = await queue(uow).status_of(task_id)
            if status is None:
                raise WritebackNotFound(task_id)
            raise WritebackNotFailed(task_id, status)
        await uow.commit()
