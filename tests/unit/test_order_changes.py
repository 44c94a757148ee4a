"""What `OrderRepository.save` writes after an event: only the rows that moved, and what a
new order's one-statement intake writes; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.order.domain import Address, Contact, LineInput, Order, PlaceOrder
from services.order.pii import PiiCipher, generate_key
from services.order.repository import one_trip
from services.order.repository.changes import Changes, Loaded
from services.order.repository.rows import line_values, order_values
from shared.events import (
    ConfirmedLine,
    OrderLinesWaiting,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
    WaitingReason,
)

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)


def three_lines() -> Order:
    order = Order.place(
        PlaceOrder(
            channel="storefront",
            external_id=None,
            currency="USD",
            customer=Contact("Ann Lee", "ann@example.com"),
            shipping=Address("1 Main St", "Springfield", "62704", "US", region="IL"),
            lines=tuple(LineInput(f"SKU-{i}", 1, Decimal("5")) for i in range(3)),
        ),
        now=T0,
    )
    order.events.clear()
    return order


def ids(order: Order, *positions: int) -> list[str]:
    return [order.lines[i].line_id for i in positions]


def confirmed(order: Order, line_ids: list[str], ref: str = "SO-1") -> SupplierConfirmed:
    return SupplierConfirmed(
        order_id=order.id,
        supplier_id="sup-a",
        supplier_order_ref=ref,
        lines=[ConfirmedLine(line_id=i, quantity=1, unit_cost=Decimal("3")) for i in line_ids],
        currency="USD",
        ship_by=T0 + timedelta(days=2),
    )


def test_nothing_moved_writes_nothing() -> None:
    order = three_lines()
    changes = Changes.since(order, Loaded.of(order))
    assert changes == Changes()


def test_a_confirmation_of_two_lines_writes_them_the_order_and_the_allocation() -> None:
    order = three_lines()
    before = Loaded.of(order)
    order.apply(confirmed(order, ids(order, 0, 1)), T0)
    changes = Changes.since(order, before)
    assert changes.order is not None and changes.order["status"] == "routed"
    assert [ln["b_id"] for ln in changes.lines] == ids(order, 0, 1)
    assert changes.lines[0] == {
        "b_id": ids(order, 0)[0],
        "stage": 1,
        "supplier_id": "sup-a",
        "unit_cost": Decimal("3"),
        "routing_failed": None,
        "waiting": None,
    }
    assert [a["supplier_order_ref"] for a in changes.allocations] == ["SO-1"]
    assert changes.shipments == []


def test_a_repeated_confirmation_writes_nothing_and_a_waiting_line_only_itself() -> None:
    order = three_lines()
    order.apply(confirmed(order, ids(order, 0, 1)), T0)
    before = Loaded.of(order)
    order.apply(confirmed(order, ids(order, 0, 1)), T0)
    assert Changes.since(order, before) == Changes()
    order.apply(
        OrderLinesWaiting(
            order_id=order.id,
            line_ids=ids(order, 2),
            reason=WaitingReason.BREAKER_OPEN,
            since=T0,
        ),
        T0,
    )
    changes = Changes.since(order, before)
    assert changes.order is None  # still routed
    assert [(ln["b_id"], ln["waiting"]) for ln in changes.lines] == [
        (ids(order, 2)[0], "breaker_open")
    ]


def test_a_shipment_is_written_when_new_and_again_only_when_delivered() -> None:
    order = three_lines()
    order.apply(confirmed(order, ids(order, 0, 1, 2)), T0)
    before = Loaded.of(order)
    dispatch = ShipmentDispatched(
        order_id=order.id,
        supplier_id="sup-a",
        carrier="ups",
        tracking_number="1Z1",
        line_ids=ids(order, 0, 1, 2),
    )
    order.apply(dispatch, T0)
    changes = Changes.since(order, before)
    assert [s["tracking_number"] for s in changes.shipments] == ["1Z1"]
    assert changes.allocations == []
    before = Loaded.of(order)
    order.apply(dispatch, T0)
    assert Changes.since(order, before) == Changes()
    order.apply(ShipmentDelivered(order_id=order.id, tracking_number="1Z1", delivered_at=T0), T0)
    changes = Changes.since(order, before)
    assert [(s["tracking_number"], s["delivered_at"]) for s in changes.shipments] == [("1Z1", T0)]
    assert changes.order is not None and changes.order["status"] == "delivered"


def test_without_a_snapshot_everything_is_written() -> None:
    order = three_lines()
    order.apply(confirmed(order, ids(order, 0)), T0)
    changes = Changes.since(order, None)
    assert changes.order is not None
    assert len(changes.lines) == 3 and len(changes.allocations) == 1


def test_the_intake_statement_writes_every_column_a_new_order_has() -> None:
    """PostgreSQL's one-statement intake lists its columns by hand: a column added to a new
    order's rows and not to the statement would be dropped silently."""
    order = three_lines()
    cipher = PiiCipher(f"main:{generate_key()}")
    params = one_trip.intake_parameters(
        [], [order_values(order, cipher)], line_values(order), [], {}, T0
    )
    assert {k[2:] for k in params if k.startswith("o_")} == set(order_values(order, cipher))
    assert {k[2:] for k in params if k.startswith("l_")} == set(line_values(order)[0])
