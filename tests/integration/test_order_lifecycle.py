"""The order lifecycle driven by the supplier service's events through the real broker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.order.app import create_app
from services.order.settings import OrderSettings
from shared import dlq
from shared.events import (
    ConfirmedLine,
    DelayReason,
    OrderRoutingFailed,
    RoutingFailureReason,
    Severity,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
    new_envelope,
)
from shared.testing import eventually
from tests.support.data import API_KEY, order_body
from tests.support.kafka import publish_envelopes
from tests.support.services import in_process

NOW = datetime.now(UTC)


@pytest.fixture
async def order(database_url, settings_for):
    async with in_process(
        create_app, settings_for(OrderSettings, await database_url("order"))
    ) as svc:
        await svc.runtime.bus.wait_connected()
        yield svc


async def place_two_lines(svc) -> dict:
    body = order_body()
    body["lines"].append({"sku": "TEA-2", "quantity": 1, "unit_price": "4.00"})
    response = await svc.client.post("/v1/orders", json=body, headers=API_KEY)
    assert response.status_code == 201
    return response.json()


def confirmed(order_id: str, supplier: str, line_id: str, ref: str) -> SupplierConfirmed:
    return SupplierConfirmed(
        order_id=order_id,
        supplier_id=supplier,
        supplier_order_ref=ref,
        lines=[ConfirmedLine(line_id=line_id, quantity=1, unit_cost=Decimal("3.10"))],
        currency="USD",
        ship_by=NOW + timedelta(hours=48),
    )


def dispatched(order_id: str, supplier: str, line_id: str, tracking: str) -> ShipmentDispatched:
    return ShipmentDispatched(
        order_id=order_id,
        supplier_id=supplier,
        carrier="ups",
        tracking_number=tracking,
        line_ids=[line_id],
    )


async def state(svc, order_id: str) -> dict:
    return (await svc.client.get(f"/v1/orders/{order_id}", headers=API_KEY)).json()


async def wait_for(svc, order_id: str, **expected):
    async def probe():
        current = await state(svc, order_id)
        return current if all(current.get(k) == v for k, v in expected.items()) else None

    return await eventually(probe, what=f"order {expected}")


async def test_a_split_order_goes_from_placed_to_delivered_with_a_delay_on_the_way(order, broker):
    placed = await place_two_lines(order)
    oid = placed["id"]
    line_a, line_b = (ln["line_id"] for ln in placed["lines"])
    bootstrap = broker.bootstrap

    await publish_envelopes(bootstrap, [new_envelope(confirmed(oid, "sup_a", line_a, "A-1001"))])
    await wait_for(order, oid, status="routed")
    await publish_envelopes(bootstrap, [new_envelope(confirmed(oid, "sup_b", line_b, "B-77"))])
    current = await wait_for(order, oid, status="confirmed")
    assert {a["supplier_id"] for a in current["allocations"]} == {"sup_a", "sup_b"}

    delay = ShipmentDelayed(
        order_id=oid,
        supplier_id="sup_a",
        reason=DelayReason.AT_RISK,
        severity=Severity.NORMAL,
        expected_by=NOW + timedelta(hours=60),
    )
    await publish_envelopes(bootstrap, [new_envelope(delay)])
    await wait_for(order, oid, delayed=True)
    await publish_envelopes(bootstrap, [new_envelope(dispatched(oid, "sup_a", line_a, "1Z999"))])
    current = await wait_for(order, oid, delayed=False)
    assert current["status"] == "confirmed", "one line shipped, one still waiting"

    cancel = await order.client.post(f"/v1/orders/{oid}/cancel", headers=API_KEY)
    assert cancel.status_code == 409 and cancel.json()["error"]["code"] == "already_shipped"

    await publish_envelopes(bootstrap, [new_envelope(dispatched(oid, "sup_b", line_b, "SF123"))])
    await wait_for(order, oid, status="shipped")
    for tracking in ("1Z999", "SF123"):
        done = ShipmentDelivered(
            order_id=oid, tracking_number=tracking, delivered_at=datetime.now(UTC)
        )
        await publish_envelopes(bootstrap, [new_envelope(done)])
    current = await wait_for(order, oid, status="delivered")
    assert all(s["delivered_at"] for s in current["shipments"])

    timeline = (await order.client.get(f"/v1/orders/{oid}/timeline", headers=API_KEY)).json()[
        "items"
    ]
    assert [e["type"] for e in timeline] == [
        "order-placed",
        "supplier-confirmed",
        "supplier-confirmed",
        "shipment-delayed",
        "shipment-dispatched",
        "shipment-dispatched",
        "shipment-delivered",
        "shipment-delivered",
    ]
    times = [e["time"] for e in timeline]
    assert times == sorted(times)


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_out_of_order_and_repeated_events_do_not_corrupt_the_state(order, broker):
    placed = await place_two_lines(order)
    oid = placed["id"]
    line_a, line_b = (ln["line_id"] for ln in placed["lines"])
    ship_a = new_envelope(dispatched(oid, "sup_a", line_a, "TRK-A"))
    confirm_a = new_envelope(confirmed(oid, "sup_a", line_a, "A-1"))
    failed_b = new_envelope(
        OrderRoutingFailed(
            order_id=oid, line_ids=[line_b], reason=RoutingFailureReason.OUT_OF_STOCK
        )
    )
    # topics are per event type, so across topics events can arrive in any order:
    # here the dispatch is consumed before the confirmation, and everything twice
    await publish_envelopes(broker.bootstrap, [ship_a, ship_a])
    await wait_for(order, oid, status="routed")
    await publish_envelopes(broker.bootstrap, [confirm_a, confirm_a, failed_b, failed_b])

    async def both_applied():  # the two topics' events may be applied in either order
        current = await state(order, oid)
        applied = current["status"] == "needs_attention" and current["allocations"]
        return current if applied else None

    current = await eventually(both_applied, what="confirmation and routing failure applied")
    line_states = {ln["line_id"]: ln["state"] for ln in current["lines"]}
    assert line_states == {line_a: "shipped", line_b: "routing_failed"}
    assert len(current["allocations"]) == 1 and len(current["shipments"]) == 1

    timeline = (await order.client.get(f"/v1/orders/{oid}/timeline", headers=API_KEY)).json()[
        "items"
    ]
    assert [e["type"] for e in timeline].count("shipment-dispatched") == 1, (
        "duplicates recorded once"
    )
    early = next(e for e in timeline if e["type"] == "shipment-dispatched")
    assert early["note"] == "dispatch arrived before the supplier's confirmation"

    # failover: another supplier takes line B over
    await publish_envelopes(
        broker.bootstrap, [new_envelope(confirmed(oid, "sup_c", line_b, "C-9"))]
    )
    current = await wait_for(order, oid, status="confirmed")
    assert {ln["supplier_id"] for ln in current["lines"]} == {"sup_a", "sup_c"}


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_event_for_an_unknown_order_is_dead_lettered_and_others_flow(order, broker):
    placed = await place_two_lines(order)
    line_a = placed["lines"][0]["line_id"]
    stray = new_envelope(confirmed("ord_unknown", "sup_a", "ord_unknown-1", "X-1"))
    await publish_envelopes(
        broker.bootstrap, [stray, new_envelope(confirmed(placed["id"], "sup_a", line_a, "A-5"))]
    )
    await wait_for(order, placed["id"], status="routed")
    letters = await eventually(
        lambda: dlq.list_dead_letters(broker.bootstrap, ["supplier-confirmed"])
    )
    assert letters[0].dlq_headers["error_type"] == "PermanentError"
    assert "ord_unknown" in letters[0].dlq_headers["error_message"]
