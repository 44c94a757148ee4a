"""A supplier that never decides is called off in time and the line fails over, once."""

from __future__ import annotations

import pytest

from shared.testing import eventually
from tests.support.kafka import publish_envelopes
from tests.support.supplier import add_supplier, allocations, control, placed, sim_orders


@pytest.fixture
async def impatient(supplier_with):
    async with supplier_with(
        supplier_check_after_s=0.5,
        supplier_reconcile_interval_s=0.2,
        supplier_decision_timeout_s=1.5,
    ) as svc:
        yield svc


async def test_an_undecided_supplier_is_called_off_and_the_line_fails_over(impatient, broker):
    dozy = await add_supplier(impatient, "dozy", offers=[("MUG", "3.00", 100, 24)])
    spare = await add_supplier(impatient, "spare", offers=[("MUG", "5.00", 100, 24)])
    await control(impatient, "dozy", decision_delay_s=3600)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])

    async def failed_over():
        items = await allocations(impatient, event.subject)
        by = {i["supplier_id"]: i["state"] for i in items}
        done = by.get(dozy) == "cancelled" and by.get(spare) in ("accepted", "dispatched")
        return items if done else None

    await eventually(failed_over, timeout=40, what="called off and failed over")
    [off] = await sim_orders(impatient, "dozy")
    assert off["state"] == "cancelled", "nothing bought twice"
    assert len(await sim_orders(impatient, "spare")) == 1
