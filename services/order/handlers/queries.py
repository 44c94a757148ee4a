"""Order reads: one order, a page of orders, a timeline, a customer's contact details."""

from __future__ import annotations

from collections.abc import Collection

from services.order.domain import Order
from services.order.errors import OrderNotFound
from services.order.repository import CustomerContact, OrderFilter, TimelineEntry
from services.order.store import OrderUnitOfWork


async def get_order(order_id: str, uow: OrderUnitOfWork) -> Order:
    async with uow:
        await uow.single_statement(reads=True)  # the order is loaded in one statement
        order = await uow.orders.get(order_id)
    if order is None:
        raise OrderNotFound(order_id)
    return order


async def list_orders(
    flt: OrderFilter, limit: int, cursor: str | None, uow: OrderUnitOfWork
) -> tuple[list[Order], str | None]:
    """A page of orders, newest first, and the cursor of the next page (`InvalidCursor`)."""
    async with uow:
        return await uow.orders.list(flt, limit, cursor)


async def timeline(order_id: str, uow: OrderUnitOfWork) -> list[TimelineEntry]:
    async with uow:
        if await uow.orders.get(order_id) is None:
            raise OrderNotFound(order_id)
        return await uow.timeline.of(order_id)


async def contact(order_id: str, uow: OrderUnitOfWork) -> CustomerContact:
    """An order's contact details and ship-to (`redacted` says whether there are any): the
    batch lookup's query for one order, which reads neither its lines nor its state."""
    found = await contacts([order_id], uow, ship_to=True)
    if not found:
        raise OrderNotFound(order_id)
    return found[0]


async def contacts(
    order_ids: Collection[str], uow: OrderUnitOfWork, *, ship_to: bool = False
) -> list[CustomerContact]:
    """The customer contacts of those of `order_ids` that exist (with their ship-to
    addresses if `ship_to`), read in one query."""
    async with uow:
        await uow.single_statement(reads=True)
        return await uow.orders.contacts(list(dict.fromkeys(order_ids)), ship_to=ship_to)
