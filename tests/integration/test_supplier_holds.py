"""A held order is routed only once released, whichever topic is consumed first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import HoldReason, OrderHeld, OrderReleased, new_envelope
from shared.testing import eventually
from tests.support.kafka import publish_envelopes
from tests.support.supplier import add_supplier, allocations, placed, sim_orders, states


async def test_a_held_order_is_parked_until_released(supplier, broker):
    await add_supplier(supplier, "holdco", offers=[("MUG", "4.00", 100, 24)])
    order = placed(("MUG", 1, "12.50"))
    now = datetime.now(UTC)
    held = OrderHeld(order_id=order.subject, reason=HoldReason.HIGH_VALUE, held_at=now)
    free = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [new_envelope(held)])

    async def hold_recorded() -> bool:
        async with supplier.runtime.uow() as uow:
            return await uow.holds.held(order.subject)

    await eventually(hold_recorded, what="the hold consumed")
    await publish_envelopes(broker.bootstrap, [order, free])
    await states(supplier, free.subject, "accepted")  # consumed after the held order
    assert await allocations(supplier, order.subject) == []
    assert {o["order_id"] for o in await sim_orders(supplier, "holdco")} == {free.subject}

    released = OrderReleased(order_id=order.subject, released_at=now + timedelta(seconds=1))
    await publish_envelopes(broker.bootstrap, [new_envelope(released)])
    await states(supplier, order.subject, "accepted")
