"""Holds on the Order aggregate: held at intake, by hand, released, re-addressed; no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.order.domain import (
    Address,
    Contact,
    LineInput,
    Order,
    PlaceOrder,
    Status,
)
from services.order.errors import AddressFixRequired, NotOnHold, OrderClosed, SupplierHasOrder
from services.order.intake import IntakePolicy
from shared.events import (
    ConfirmedLine,
    HoldReason,
    OrderCancelled,
    OrderHeld,
    OrderLinesWaiting,
    OrderPlaced,
    OrderReleased,
    OrderRoutingFailed,
    RoutingFailureReason,
    SupplierConfirmed,
    WaitingReason,
)

T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
GOOD = Address(
    line1="1 Main St", city="Springfield", region="IL", postal_code="62704", country="US"
)
NO_STATE = Address(line1="1 Main St", city="Springfield", postal_code="62704", country="US")


def command(address: Address = GOOD, price: str = "10.00", phone: str | None = None) -> PlaceOrder:
    return PlaceOrder(
        channel="storefront",
        external_id=None,
        currency="USD",
        customer=Contact(name="Ann Lee", email="ann@example.com", phone=phone),
        shipping=address,
        lines=(LineInput("MUG-1", 2, Decimal(price)), LineInput("TEA-1", 1, Decimal("4.00"))),
    )


def place(cmd: PlaceOrder, policy: IntakePolicy | None = None) -> Order:
    return Order.place(cmd, now=T0, holds=(policy or IntakePolicy()).holds_for(cmd))


def kinds(order: Order) -> list[str]:
    found = [e.event_type for e in order.events]
    order.events.clear()
    return found


def confirm(order: Order, line_id: str) -> str | None:
    event = SupplierConfirmed(
        order_id=order.id,
        supplier_id="sup-a",
        supplier_order_ref="A-1",
        lines=[ConfirmedLine(line_id=line_id, quantity=1, unit_cost=Decimal("3"))],
        currency="USD",
        ship_by=T0 + timedelta(days=2),
    )
    return order.apply(event, T0 + timedelta(minutes=5))


def test_a_valid_address_under_the_limit_is_placed_as_before():
    order = place(command(), IntakePolicy({"USD": Decimal("1000")}))
    assert order.status is Status.PLACED and order.holds == []
    assert kinds(order) == ["order-placed"]


def test_a_bad_address_is_accepted_but_held_and_not_placed():
    order = place(command(NO_STATE))
    assert order.status is Status.ON_HOLD and not order.placed
    [hold] = order.holds
    assert (hold.reason, hold.note, hold.since) == (
        HoldReason.ADDRESS_INVALID,
        "shipping_address.region: required",
        T0,
    )
    [event] = order.events
    assert isinstance(event, OrderHeld) and event.reason is HoldReason.ADDRESS_INVALID
    assert "Main" not in event.note, "no street in the event"


def test_an_undiallable_phone_holds_the_order_too():
    order = place(command(phone="+1 555 0100"))
    assert [h.note for h in order.holds] == ["phone: not a possible phone number for the country"]


def test_an_order_above_its_currency_limit_is_held_high_value():
    policy = IntakePolicy({"USD": Decimal("20"), "EUR": Decimal("1")})
    order = place(command(price="9.00"), policy)  # 22.00 USD
    [hold] = order.holds
    assert hold.reason is HoldReason.HIGH_VALUE
    assert hold.note == "total 22.00 USD is above the limit 20.00 USD"
    assert place(command(price="8.00"), policy).holds == [], "20.00 is not above 20"


def test_release_places_a_high_value_order_once():
    order = place(command(price="900"), IntakePolicy({"USD": Decimal("100")}))
    order.events.clear()
    order.release(now=T0 + timedelta(hours=1))
    assert order.status is Status.PLACED and order.placed
    released, placed = order.events
    assert isinstance(released, OrderReleased) and isinstance(placed, OrderPlaced)
    assert placed.placed_at == T0 + timedelta(hours=1)
    with pytest.raises(NotOnHold):
        order.release()


def test_release_cannot_lift_an_address_hold():
    order = place(command(NO_STATE))
    with pytest.raises(AddressFixRequired):
        order.release()
    assert order.status is Status.ON_HOLD


def test_a_corrected_address_releases_and_places_the_order():
    order = place(command(NO_STATE))
    order.events.clear()
    order.change_address(GOOD, "+1 217 555 0123", now=T0 + timedelta(minutes=3))
    assert order.status is Status.PLACED and order.shipping == GOOD
    assert order.customer.phone == "+1 217 555 0123"
    assert [n.type for n in order.notes] == ["shipping-address-changed"]
    assert kinds(order) == ["order-released", "order-placed"]


def test_a_manual_hold_stays_after_the_address_is_fixed_until_released():
    order = place(command(NO_STATE))
    assert order.hold("customer called") is True
    assert order.hold("again") is False, "one manual hold at a time"
    order.events.clear()
    order.change_address(GOOD, None)
    assert [h.reason for h in order.holds] == [HoldReason.MANUAL]
    assert [n.type for n in order.notes] == ["shipping-address-changed", "hold-lifted"]
    assert kinds(order) == []
    order.release()
    assert kinds(order) == ["order-released", "order-placed"]


def test_a_hold_after_placement_is_announced_and_release_does_not_place_again():
    order = place(command())
    order.events.clear()
    order.hold("check fraud", now=T0)
    [held] = order.events
    assert isinstance(held, OrderHeld) and held.reason is HoldReason.MANUAL
    order.events.clear()
    order.release()
    assert kinds(order) == ["order-released"]


def test_no_hold_or_new_address_once_a_supplier_has_it_or_after_cancel():
    order = place(command())
    confirm(order, order.lines[0].line_id)
    with pytest.raises(SupplierHasOrder):
        order.hold("too late")
    with pytest.raises(SupplierHasOrder):
        order.change_address(GOOD, None)
    cancelled = place(command())
    cancelled.cancel("customer asked")
    with pytest.raises(OrderClosed):
        cancelled.hold("x")


def test_a_confirmation_for_a_held_order_lifts_the_hold():
    order = place(command())
    order.hold("check")
    order.events.clear()
    note = confirm(order, order.lines[0].line_id)
    assert note == "the supplier already had it: the hold is lifted"
    assert order.holds == [] and order.status is Status.ROUTED
    assert kinds(order) == ["order-released"]


def test_a_held_order_can_be_cancelled():
    order = place(command(NO_STATE))
    order.events.clear()
    assert order.cancel("fraud") is True
    assert order.status is Status.CANCELLED
    assert [type(e) for e in order.events] == [OrderCancelled]


def test_waiting_lines_show_until_confirmed_or_failed():
    order = place(command())
    first, second = (ln.line_id for ln in order.lines)
    waiting = OrderLinesWaiting(
        order_id=order.id, line_ids=[first, second], reason=WaitingReason.BREAKER_OPEN, since=T0
    )
    assert order.apply(waiting, T0) is None
    assert [ln.waiting for ln in order.lines] == ["breaker_open", "breaker_open"]
    assert order.status is Status.PLACED, "waiting does not change the order's status"
    confirm(order, first)
    assert [ln.waiting for ln in order.lines] == [None, "breaker_open"]
    assert order.status is Status.ROUTED
    failed = OrderRoutingFailed(
        order_id=order.id, line_ids=[second], reason=RoutingFailureReason.NO_OFFER
    )
    order.apply(failed, T0)
    assert order.lines[1].waiting is None and order.status is Status.NEEDS_ATTENTION
