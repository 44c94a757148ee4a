"""Group commit at intake: many storefront orders placed in one unit of work, or none.

`place_together` writes a group with one statement per table (idempotency keys, orders,
lines, timeline, outbox) when every order in it would simply be created; otherwise it
writes nothing and answers None, and the caller places each order with `place_order`,
one by one, which gives each exactly the answer it gets alone (replay, 409s, races).
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import DBAPIError

from services.order.domain import Order, PlaceOrder
from services.order.handlers.commands import Idempotency, Placed, happened_at
from services.order.repository.timeline import event_row, note_row
from services.order.store import OrderUnitOfWork
from shared import faults


@dataclass(frozen=True)
class Intake:
    """One `POST /v1/orders` waiting for its group: the command, its key, its trace."""

    cmd: PlaceOrder
    idempotency: Idempotency | None = None
    context: contextvars.Context = field(default_factory=contextvars.copy_context)
    """The request's context: its order's events are emitted in the request's trace."""


async def place_together(group: Sequence[Intake], uow: OrderUnitOfWork) -> list[Placed] | None:
    """Create every order of `group` in one transaction; None, with nothing written, when
    one of them would not simply be created (a key used before or twice in the group, an
    external id taken or twice in the group, a concurrent twin's unique index).

    Nothing is acknowledged before the commit: an error from the commit itself propagates
    (it may have committed; placing again could create an order twice).
    """
    if _twins(group):
        return None
    orders = [Order.place(i.cmd, holds=uow.intake.holds_for(i.cmd)) for i in group]
    async with uow:
        try:
            if not await _write(group, orders, uow):
                return None  # leaving without commit rolls everything back
        except DBAPIError:
            return None  # a concurrent twin (unique index) or a deadlock: one by one decides
        faults.crash_point("intake.group_before_commit")
        await uow.commit()
    return [Placed(order, created=True) for order in orders]


async def _write(group: Sequence[Intake], orders: list[Order], uow: OrderUnitOfWork) -> bool:
    claims = sorted(
        (i.idempotency.scope, i.idempotency.key, i.idempotency.request_hash,
         i.idempotency.snapshot(order))
        for i, order in zip(group, orders, strict=True)
        if i.idempotency is not None
    )  # fmt: skip  # sorted: two groups lock the same keys in one order
    externals = [k for i in group if (k := _external(i.cmd)) is not None]
    if externals and await uow.orders.external_taken(externals):
        return False
    rows: list[dict[str, Any]] = []
    for intake, order in zip(group, orders, strict=True):
        rows += [note_row(order.id, note) for note in order.notes]
        order.notes.clear()
        for event in order.events:
            envelope = intake.context.run(uow.emit, event, time=happened_at(event))
            rows.append(event_row(envelope))
        order.events.clear()
    await uow.timeline.add_rows(rows)
    if uow.dialect == "postgresql":  # every write in one round trip
        return await uow.create_in_one_trip(claims, orders)
    if claims and len(await uow.idempotency.claim_many(claims)) < len(claims):
        return False
    await uow.orders.add_many(orders)
    return True


def _external(cmd: PlaceOrder) -> tuple[str, str, str] | None:
    if cmd.external_id is None:
        return None
    return cmd.channel, cmd.shop_id or "", cmd.external_id


def _twins(group: Sequence[Intake]) -> bool:
    """Two requests of the group share an Idempotency-Key or an external id."""
    keys = [(i.idempotency.scope, i.idempotency.key) for i in group if i.idempotency]
    externals = [k for i in group if (k := _external(i.cmd)) is not None]
    return len(set(keys)) < len(keys) or len(set(externals)) < len(externals)
