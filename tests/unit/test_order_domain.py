"""The Order aggregate of services.order.domain: placing, status derivation, events, cancel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.order.domain import (
    Address,
    Contact,
    LineInput,
    LineStage,
    Order,
    PlaceOrder,
    Status,
)
from services.order.errors import CannotCancel
from shared.events import (
    ConfirmedLine,
    DelayReason,
    EventData,
    OrderCancelled,
    OrderPlaced,
    OrderRoutingFailed,
    RoutingFailureReason,
    Severity,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
SUP_A = "sup-a"
SUP_B = "sup-b"
TRACK_A = "1Z-A"
TRACK_B = "1Z-B"

CUSTOMER = Contact(
    name="Zhang Wei", email="zhang.wei@example.com", phone="+86 138 0013 8000", locale="zh-CN"
)
SHIPPING = Address(
    line1="88 Secret Street",
    line2="Flat 7",
    city="Springfield",
    region="IL",
    postal_code="62704",
    country="US",
)


def place(n_lines: int = 3) -> Order:
    cmd = PlaceOrder(
        channel="storefront",
        external_id="ext-1",
        currency="USD",
        customer=CUSTOMER,
        shipping=SHIPPING,
        lines=tuple(
            LineInput(sku=f"SKU-{i}", quantity=i, unit_price=Decimal("10.50"))
            for i in range(1, n_lines + 1)
        ),
    )
    return Order.place(cmd, now=T0)


def ids(order: Order) -> list[str]:
    return [ln.line_id for ln in order.lines]


def split(order: Order) -> tuple[list[str], list[str]]:
    """Lines 1-2 go to supplier A, line 3 to supplier B."""
    line_ids = ids(order)
    return line_ids[:2], line_ids[2:]


def confirmed(
    order: Order, supplier: str, line_ids: list[str], ref: str | None = None
) -> SupplierConfirmed:
    return SupplierConfirmed(
        order_id=order.id,
        supplier_id=supplier,
        supplier_order_ref=ref or f"ref-{supplier}",
        lines=[ConfirmedLine(line_id=i, quantity=1, unit_cost=Decimal("4.00")) for i in line_ids],
        currency="USD",
        ship_by=T0 + timedelta(hours=48),
    )


def dispatched(
    order: Order, supplier: str, tracking: str, line_ids: list[str]
) -> ShipmentDispatched:
    return ShipmentDispatched(
        order_id=order.id,
        supplier_id=supplier,
        carrier="ups",
        tracking_number=tracking,
        line_ids=line_ids,
    )


def delivered(order: Order, tracking: str) -> ShipmentDelivered:
    return ShipmentDelivered(
        order_id=order.id, tracking_number=tracking, delivered_at=T0 + timedelta(days=3)
    )


def delayed(order: Order, supplier: str) -> ShipmentDelayed:
    return ShipmentDelayed(
        order_id=order.id,
        supplier_id=supplier,
        reason=DelayReason.NO_TRACKING_BY_DEADLINE,
        severity=Severity.URGENT,
    )


def routing_failed(order: Order, line_ids: list[str]) -> OrderRoutingFailed:
    return OrderRoutingFailed(
        order_id=order.id, line_ids=line_ids, reason=RoutingFailureReason.ALL_SUPPLIERS_FAILED
    )


def status(order: Order) -> Status:
    """The derived status (a call, so the type checker does not narrow it between events)."""
    return order.status


def apply(order: Order, event: EventData, minutes: int = 0) -> str | None:
    return order.apply(event, T0 + timedelta(minutes=minutes))


# -- placing ---------------------------------------------------------------------------


def test_place_records_exactly_one_order_placed() -> None:
    order = place()
    assert status(order) is Status.PLACED
    assert not order.delayed
    assert order.created_at == T0
    assert order.total == Decimal("63.00")  # 10.50 * (1 + 2 + 3)
    assert len(order.events) == 1
    event = order.events[0]
    assert isinstance(event, OrderPlaced)
    assert event.order_id == order.id
    assert event.channel == "storefront"
    assert event.external_id == "ext-1"
    assert event.currency == "USD"
    assert event.shipping_country == "US"
    assert event.shipping_postal_code == "62704"
    assert event.placed_at == T0
    assert [(ln.line_id, ln.sku, ln.quantity, ln.unit_price) for ln in event.lines] == [
        (ln.line_id, ln.sku, ln.quantity, ln.unit_price) for ln in order.lines
    ]
    assert [ln.sku for ln in event.lines] == ["SKU-1", "SKU-2", "SKU-3"]


def test_order_placed_carries_no_customer_pii() -> None:
    event = place().events[0]
    fields = set(type(event).model_fields)
    pii_names = {
        "customer",
        "name",
        "email",
        "phone",
        "line1",
        "line2",
        "street",
        "city",
        "address",
    }
    assert not fields & pii_names
    wire = event.model_dump_json()
    for secret in (
        CUSTOMER.name,
        CUSTOMER.email,
        CUSTOMER.phone or "",
        SHIPPING.line1,
        SHIPPING.line2 or "",
        SHIPPING.city,
    ):
        assert secret not in wire


def test_each_placed_order_gets_its_own_id_and_line_ids() -> None:
    a, b = place(), place()
    assert a.id != b.id
    assert not set(ids(a)) & set(ids(b))
    assert len(set(ids(a))) == 3


# -- the happy path of a split order -----------------------------------------------------


def test_split_order_happy_path() -> None:
    order = place()
    a_lines, b_lines = split(order)

    assert apply(order, confirmed(order, SUP_A, a_lines)) is None
    assert status(order) is Status.ROUTED
    assert apply(order, confirmed(order, SUP_B, b_lines), 1) is None
    assert status(order) is Status.CONFIRMED
    assert [(a.supplier_id, a.line_ids) for a in order.allocations] == [
        (SUP_A, a_lines),
        (SUP_B, b_lines),
    ]
    assert {ln.line_id: ln.supplier_id for ln in order.lines} == {
        a_lines[0]: SUP_A,
        a_lines[1]: SUP_A,
        b_lines[0]: SUP_B,
    }
    assert all(ln.unit_cost == Decimal("4.00") for ln in order.lines)

    assert apply(order, dispatched(order, SUP_A, TRACK_A, a_lines), 2) is None
    assert status(order) is Status.CONFIRMED  # B's line has not shipped yet
    assert order.has_shipped
    assert apply(order, dispatched(order, SUP_B, TRACK_B, b_lines), 3) is None
    assert status(order) is Status.SHIPPED
    assert [s.tracking_number for s in order.shipments] == [TRACK_A, TRACK_B]

    assert apply(order, delivered(order, TRACK_A), 4) is None
    assert status(order) is Status.SHIPPED  # one parcel still on its way
    assert apply(order, delivered(order, TRACK_B), 5) is None
    assert status(order) is Status.DELIVERED
    assert all(s.delivered_at == T0 + timedelta(days=3) for s in order.shipments)
    assert all(ln.stage is LineStage.DELIVERED for ln in order.lines)
    assert not order.delayed
    assert len(order.events) == 1  # supply-chain events are applied, not re-emitted


def test_partial_confirmation_of_one_supplier_is_routed() -> None:
    order = place()
    a_lines, _ = split(order)
    apply(order, confirmed(order, SUP_A, a_lines[:1]))
    assert status(order) is Status.ROUTED


def test_confirmation_for_unknown_lines_is_ignored_with_a_note() -> None:
    order = place()
    note = apply(order, confirmed(order, SUP_A, ["not-a-line"]))
    assert note is not None and note.startswith("ignored")
    assert order.allocations == []
    assert status(order) is Status.PLACED


def test_unrelated_event_is_ignored_with_a_note() -> None:
    order = place()
    note = apply(order, OrderCancelled(order_id=order.id, reason="x"))
    assert note is not None and note.startswith("ignored")
    assert status(order) is Status.PLACED


# -- out-of-order and repeated events --------------------------------------------------


def test_dispatch_before_confirmation_ships_with_a_note() -> None:
    order = place()
    a_lines, b_lines = split(order)
    note = apply(order, dispatched(order, SUP_A, TRACK_A, a_lines))
    assert note is not None and "before the supplier's confirmation" in note
    note2 = apply(order, dispatched(order, SUP_B, TRACK_B, b_lines))
    assert status(order) is Status.SHIPPED
    assert {ln.supplier_id for ln in order.lines} == {SUP_A, SUP_B}
    # The late confirmations do not move the lines back.
    assert apply(order, confirmed(order, SUP_A, a_lines)) is None
    assert apply(order, confirmed(order, SUP_B, b_lines)) is None
    assert status(order) is Status.SHIPPED
    assert len(order.allocations) == 2
    assert note2 == note


def test_delivery_before_dispatch_is_remembered_and_applied_on_dispatch() -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    apply(order, confirmed(order, SUP_B, b_lines))

    note = apply(order, delivered(order, TRACK_A))
    assert note is not None and "before its dispatch" in note
    assert order.early_deliveries == {TRACK_A: T0 + timedelta(days=3)}
    assert status(order) is Status.CONFIRMED
    assert order.shipments == []
    assert not order.has_shipped

    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines))
    assert order.early_deliveries == {}
    assert order.shipments[0].delivered_at == T0 + timedelta(days=3)
    assert [ln.stage for ln in order.lines] == [
        LineStage.DELIVERED,
        LineStage.DELIVERED,
        LineStage.CONFIRMED,
    ]
    apply(order, dispatched(order, SUP_B, TRACK_B, b_lines))
    assert status(order) is Status.SHIPPED
    apply(order, delivered(order, TRACK_B))
    assert status(order) is Status.DELIVERED


def test_duplicate_events_are_harmless() -> None:
    order = place()
    a_lines, b_lines = split(order)
    events: list[EventData] = [
        confirmed(order, SUP_A, a_lines),
        confirmed(order, SUP_B, b_lines),
        dispatched(order, SUP_A, TRACK_A, a_lines),
        dispatched(order, SUP_B, TRACK_B, b_lines),
        delivered(order, TRACK_A),
        delivered(order, TRACK_B),
    ]
    for event in events:
        apply(order, event)
        apply(order, event, 1)
    assert status(order) is Status.DELIVERED
    assert len(order.allocations) == 2
    assert len(order.shipments) == 2
    assert order.early_deliveries == {}
    assert all(s.delivered_at == T0 + timedelta(days=3) for s in order.shipments)


def test_duplicate_supplier_confirmed_does_not_duplicate_allocations() -> None:
    order = place()
    a_lines, _ = split(order)
    event = confirmed(order, SUP_A, a_lines)
    apply(order, event)
    first = list(order.allocations)
    apply(order, event, 5)
    assert order.allocations == first
    assert len(order.allocations) == 1
    assert order.allocations[0].confirmed_at == T0  # the first confirmation's time is kept
    assert status(order) is Status.ROUTED


def test_duplicate_dispatch_does_not_duplicate_shipments() -> None:
    order = place()
    a_lines, _ = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    event = dispatched(order, SUP_A, TRACK_A, a_lines)
    apply(order, event)
    apply(order, event, 5)
    assert len(order.shipments) == 1
    assert order.shipments[0].dispatched_at == T0


def test_duplicate_delivery_keeps_the_first_delivery_time() -> None:
    order = place(1)
    (line,) = ids(order)
    apply(order, confirmed(order, SUP_A, [line]))
    apply(order, dispatched(order, SUP_A, TRACK_A, [line]))
    apply(order, delivered(order, TRACK_A))
    later = ShipmentDelivered(
        order_id=order.id, tracking_number=TRACK_A, delivered_at=T0 + timedelta(days=9)
    )
    apply(order, later)
    assert order.shipments[0].delivered_at == T0 + timedelta(days=3)
    assert status(order) is Status.DELIVERED


# -- routing failure and failover --------------------------------------------------------


def test_routing_failure_needs_attention_until_failover_confirms() -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    assert apply(order, routing_failed(order, b_lines)) is None
    assert status(order) is Status.NEEDS_ATTENTION
    assert order.lines[2].routing_failed == "all_suppliers_failed"

    apply(order, confirmed(order, SUP_B, b_lines, ref="failover-ref"))
    assert order.lines[2].routing_failed is None
    assert order.lines[2].supplier_id == SUP_B
    assert status(order) is Status.CONFIRMED


def test_routing_failure_of_the_whole_order() -> None:
    order = place()
    apply(order, routing_failed(order, ids(order)))
    assert status(order) is Status.NEEDS_ATTENTION
    order.cancel("could not source")
    assert status(order) is Status.CANCELLED


def test_late_routing_failure_does_not_undo_a_confirmation() -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    apply(order, confirmed(order, SUP_B, b_lines))
    apply(order, routing_failed(order, b_lines))
    assert status(order) is Status.CONFIRMED
    assert all(ln.routing_failed is None for ln in order.lines)


# -- the delayed flag --------------------------------------------------------------------


def test_delay_set_for_unshipped_supplier_and_cleared_by_dispatch() -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    apply(order, confirmed(order, SUP_B, b_lines))
    assert apply(order, delayed(order, SUP_A)) is None
    assert order.delayed
    assert order.delayed_suppliers == {SUP_A}
    assert status(order) is Status.CONFIRMED  # delayed is a flag, not a status

    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines))
    assert not order.delayed
    assert order.delayed_suppliers == set()


def test_delay_cleared_by_delivery() -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    apply(order, confirmed(order, SUP_B, b_lines))
    apply(order, delayed(order, SUP_A))
    # The delivery arrives before the dispatch: the flag stays until the lines move...
    apply(order, delivered(order, TRACK_A))
    assert order.delayed
    # ...and the dispatch that carries the early delivery clears it.
    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines))
    assert not order.delayed
    assert order.lines[0].stage is LineStage.DELIVERED


def test_delay_before_the_supplier_confirmed_is_kept_until_its_lines_ship() -> None:
    # topics are per event type, so a backlog can be consumed across topics in any order
    order = place()
    a_lines, _ = split(order)
    apply(order, delayed(order, SUP_A))
    assert order.delayed
    apply(order, confirmed(order, SUP_A, a_lines))
    assert order.delayed
    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines))
    assert not order.delayed


def test_delay_for_already_shipped_supplier_is_ignored_with_a_note() -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    apply(order, confirmed(order, SUP_B, b_lines))
    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines))
    note = apply(order, delayed(order, SUP_A))
    assert note is not None and "already shipped" in note
    assert not order.delayed
    assert order.delayed_suppliers == set()


def test_delay_for_one_supplier_survives_the_other_shipping() -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    apply(order, confirmed(order, SUP_B, b_lines))
    apply(order, delayed(order, SUP_A))
    apply(order, dispatched(order, SUP_B, TRACK_B, b_lines))
    apply(order, delivered(order, TRACK_B))
    assert order.delayed
    assert order.delayed_suppliers == {SUP_A}
    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines))
    assert not order.delayed


def test_two_delayed_suppliers_clear_independently() -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    apply(order, confirmed(order, SUP_B, b_lines))
    apply(order, delayed(order, SUP_A))
    apply(order, delayed(order, SUP_B))
    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines))
    assert order.delayed
    assert order.delayed_suppliers == {SUP_B}
    apply(order, dispatched(order, SUP_B, TRACK_B, b_lines))
    assert not order.delayed


def test_partial_dispatch_of_a_supplier_keeps_the_delay() -> None:
    order = place()
    a_lines, _ = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    apply(order, delayed(order, SUP_A))
    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines[:1]))
    assert order.delayed
    apply(order, dispatched(order, SUP_A, "1Z-A2", a_lines[1:]))
    assert not order.delayed


def test_delay_of_a_failed_over_supplier_is_cleared_when_the_lines_ship() -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    apply(order, confirmed(order, "sup-c", b_lines))
    apply(order, delayed(order, "sup-c"))  # e.g. supplier_backorder for line 3
    assert order.delayed
    # The supplier service fails line 3 over from C to B; everything ships and arrives.
    apply(order, confirmed(order, SUP_B, b_lines))
    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines))
    apply(order, dispatched(order, SUP_B, TRACK_B, b_lines))
    apply(order, delivered(order, TRACK_A))
    apply(order, delivered(order, TRACK_B))
    assert status(order) is Status.DELIVERED
    assert not order.delayed


# -- cancellation ------------------------------------------------------------------------


def test_cancel_before_anything_shipped_records_once() -> None:
    order = place()
    a_lines, _ = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    now = T0 + timedelta(hours=1)
    assert order.cancel("customer changed their mind", now=now) is True
    assert status(order) is Status.CANCELLED
    assert order.cancelled_at == now
    assert order.cancel_reason == "customer changed their mind"
    cancels = [e for e in order.events if isinstance(e, OrderCancelled)]
    assert len(cancels) == 1
    assert cancels[0].order_id == order.id
    assert cancels[0].reason == "customer changed their mind"

    assert order.cancel("again", now=now + timedelta(hours=1)) is False
    assert len(order.events) == 2
    assert order.cancel_reason == "customer changed their mind"
    assert order.cancelled_at == now


def test_cancel_a_freshly_placed_order() -> None:
    order = place()
    assert order.cancel("fraud") is True
    assert status(order) is Status.CANCELLED
    assert order.cancelled_at is not None


def test_cancel_with_only_an_early_delivery_is_still_allowed() -> None:
    order = place()
    apply(order, delivered(order, TRACK_A))  # nothing has actually shipped yet
    assert order.cancel("x") is True


def test_cannot_cancel_once_any_line_shipped() -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    apply(order, confirmed(order, SUP_B, b_lines))
    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines[:1]))
    with pytest.raises(CannotCancel):
        order.cancel("too late")
    assert status(order) is Status.CONFIRMED
    assert order.cancelled_at is None
    assert not any(isinstance(e, OrderCancelled) for e in order.events)


def test_cannot_cancel_a_delivered_order() -> None:
    order = place(1)
    (line,) = ids(order)
    apply(order, dispatched(order, SUP_A, TRACK_A, [line]))
    apply(order, delivered(order, TRACK_A))
    with pytest.raises(CannotCancel):
        order.cancel("too late")
    assert status(order) is Status.DELIVERED


AFTER_CANCEL = "recorded after the order was cancelled"


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda o, a, b: confirmed(o, SUP_A, a), id="confirmed"),
        pytest.param(lambda o, a, b: routing_failed(o, b), id="routing_failed"),
        pytest.param(lambda o, a, b: delayed(o, SUP_A), id="delayed"),
    ],
)
def test_events_after_cancel_are_applied_with_a_note(
    make: Callable[[Order, list[str], list[str]], EventData],
) -> None:
    order = place()
    a_lines, b_lines = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    order.cancel("customer")
    note = apply(order, make(order, a_lines, b_lines))
    assert note == AFTER_CANCEL
    assert status(order) is Status.CANCELLED
    assert len(order.events) == 2


def test_dispatch_after_cancel_is_applied_with_a_note() -> None:
    order = place()
    a_lines, _ = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    order.cancel("customer")
    assert apply(order, dispatched(order, SUP_A, TRACK_A, a_lines)) == AFTER_CANCEL
    assert len(order.shipments) == 1  # the parcel is real; it is recorded
    assert status(order) is Status.CANCELLED
    assert order.cancel("again") is False  # already cancelled: no CannotCancel either


def test_delivery_after_cancel_is_applied_with_a_note() -> None:
    order = place()
    a_lines, _ = split(order)
    apply(order, confirmed(order, SUP_A, a_lines))
    order.cancel("customer")
    apply(order, dispatched(order, SUP_A, TRACK_A, a_lines))
    note = apply(order, delivered(order, TRACK_A))
    assert order.shipments[0].delivered_at is not None
    assert status(order) is Status.CANCELLED
    assert note == AFTER_CANCEL


# -- order independence ------------------------------------------------------------------


def _two_supplier_events(order: Order) -> list[EventData]:
    a_lines, b_lines = split(order)
    return [
        confirmed(order, SUP_A, a_lines),
        confirmed(order, SUP_B, b_lines),
        dispatched(order, SUP_A, TRACK_A, a_lines),
        dispatched(order, SUP_B, TRACK_B, b_lines),
        delivered(order, TRACK_A),
        delivered(order, TRACK_B),
    ]


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(6)))
def test_any_order_of_events_gives_the_same_answer(permutation: list[int]) -> None:
    order = place()
    events = _two_supplier_events(order)
    for minute, i in enumerate(permutation):
        apply(order, events[i], minute)
    assert status(order) is Status.DELIVERED
    assert len(order.allocations) == 2
    assert len(order.shipments) == 2
    assert order.early_deliveries == {}
    assert all(ln.stage is LineStage.DELIVERED for ln in order.lines)
    assert {ln.line_id: ln.supplier_id for ln in order.lines} == dict(
        zip(ids(order), [SUP_A, SUP_A, SUP_B], strict=True)
    )
    assert not order.delayed


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(13)))
def test_any_order_with_duplicates_and_a_delay_gives_the_same_answer(
    permutation: list[int],
) -> None:
    order = place()
    events = _two_supplier_events(order)
    events = [*events, *events, delayed(order, SUP_A)]
    for minute, i in enumerate(permutation):
        apply(order, events[i], minute)
    assert status(order) is Status.DELIVERED
    assert len(order.allocations) == 2
    assert len(order.shipments) == 2
    assert order.early_deliveries == {}
    assert not order.delayed
    assert order.delayed_suppliers == set()
