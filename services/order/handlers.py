"""Order service command handlers: one unit of work each."""

from __future__ import annotations

from services.order.domain import Order, PlaceOrder
from services.order.store import OrderUnitOfWork


async def place_order(cmd: PlaceOrder, uow: OrderUnitOfWork) -> Order:
    async with uow:
        order = Order.place(cmd)
        await uow.orders.add(order)
        for event in order.events:
            uow.emit(event, time=order.created_at)
        await uow.commit()
    return order


class OrderNotFound(Exception):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} not found")
        self.order_id = order_id


async def get_order(order_id: str, uow: OrderUnitOfWork) -> Order:
    async with uow:
        order = await uow.orders.get(order_id)
    if order is None:
        raise OrderNotFound(order_id)
    return order
