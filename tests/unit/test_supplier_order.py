"""The SupplierOrder aggregate: every legal move, every illegal one refused, what each records."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.supplier.domain import (
    CANCEL_ATTEMPTS,
    SOURCES,
    Action,
    AllocatedLine,
    IllegalTransition,
    State,
    SupplierOrder,
)
from shared.events import (
    DelayReason,
    Severity,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
LINES = [
    AllocatedLine("ord_1-1", "MUG", "ACME-MUG", 2, Decimal("4.00"), Decimal("12.50"), "USD"),
    AllocatedLine("ord_1-2", "TEA", "ACME-TEA", 1, Decimal("1.00"), Decimal("4.00"), "USD"),
]


def order(state: State = State.SENDING, **values: object) -> SupplierOrder:
    so = SupplierOrder.place(
        "so_1", "ord_1", "sup_a", list(LINES), now=T0, lease_until=T0 + timedelta(seconds=60)
    )
    so.state = state
    for k, v in values.items():
        setattr(so, k, v)
    if state in (State.ACCEPTED, State.DISPATCHED, State.DELIVERED):
        so.confirmed_at, so.ship_by, so.sla_hours = T0, T0 + timedelta(hours=48), 48.0
    if state in (State.DISPATCHED, State.DELIVERED):
        so.tracking_number, so.carrier = "1Z-1", "ups"
    return so


# one call per action that has a method; RECEIVE and the CLAIMs are applied set-based by
# the repository (from the same SOURCES) and covered by the integration tests
MOVES: dict[Action, Callable[[SupplierOrder], object]] = {
    Action.FAIL: lambda so: so.placing_failed(State.UNAVAILABLE, "Unavailable: timeout"),
    Action.ACCEPT: lambda so: so.accept("REF-1", 48.0, T0),
    Action.REJECT: lambda so: so.reject("no thanks"),
    Action.BACKORDER: lambda so: so.backorder("REF-1", T0 + timedelta(seconds=30), moved=False),
    Action.DISPATCH: lambda so: so.dispatch("ups", "1Z-9", "REF-1", 48.0, T0),
    Action.DELIVER: lambda so: so.deliver(T0),
    Action.REPORT_EXCEPTION: lambda so: so.report_exception(),
    Action.CHECK_SLA: lambda so: so.check_sla(T0 + timedelta(hours=100)),
    Action.CALL_OFF: lambda so: so.call_off(),
    Action.CALL_OFF_LATE: lambda so: so.call_off_late_acceptance("REF-1"),
    Action.FINISH_CANCEL: lambda so: so.cancel_confirmed(),
    Action.RESEND: lambda so: so.resend(T0 + timedelta(seconds=60)),
    Action.RECOVER: lambda so: so.taken_after_all("REF-1"),
}
SET_BASED = {Action.RECEIVE, Action.CLAIM_SEND, Action.CLAIM_CANCEL}


def test_every_action_is_a_method_or_applied_set_based() -> None:
    assert set(MOVES) | SET_BASED == set(Action)


def test_states_are_the_strings_stored_today() -> None:
    assert {s.value for s in State} == {
        "to_send",
        "sending",
        "received",
        "backordered",
        "accepted",
        "dispatched",
        "delivered",
        "rejected",
        "out_of_stock",
        "unavailable",
        "cancel_pending",
        "cancelling",
        "cancelled",
        "cancel_failed",
    }


EXPECTED_TARGET: dict[Action, Callable[[State], State]] = {
    Action.FAIL: lambda _: State.UNAVAILABLE,
    Action.ACCEPT: lambda _: State.ACCEPTED,
    Action.REJECT: lambda _: State.REJECTED,
    Action.BACKORDER: lambda _: State.BACKORDERED,
    Action.DISPATCH: lambda _: State.DISPATCHED,
    Action.DELIVER: lambda _: State.DELIVERED,
    Action.REPORT_EXCEPTION: lambda _: State.DISPATCHED,
    Action.CHECK_SLA: lambda _: State.ACCEPTED,
    Action.CALL_OFF: lambda s: State.CANCELLED if s is State.TO_SEND else State.CANCEL_PENDING,
    Action.CALL_OFF_LATE: lambda _: State.CANCEL_PENDING,
    Action.FINISH_CANCEL: lambda _: State.CANCELLED,
    Action.RESEND: lambda _: State.SENDING,
    Action.RECOVER: lambda _: State.RECEIVED,
}


@pytest.mark.parametrize(
    ("action", "state"), [(a, s) for a in MOVES for s in sorted(SOURCES[a])], ids=str
)
def test_every_legal_move(action: Action, state: State) -> None:
    so = order(state)
    assert so.can(action)
    MOVES[action](so)
    assert so.state is EXPECTED_TARGET[action](state)


@pytest.mark.parametrize(
    ("action", "state"),
    [(a, s) for a in MOVES for s in sorted(set(State) - SOURCES[a])],
    ids=str,
)
def test_every_illegal_move_is_refused_and_changes_nothing(action: Action, state: State) -> None:
    so = order(state)
    before = copy.deepcopy(so)
    with pytest.raises(IllegalTransition) as refused:
        MOVES[action](so)
    assert refused.value.state == state.value and refused.value.so_id == "so_1"
    assert vars(so) == vars(before)
    assert so.events == [] and not so.tally


def test_accept_records_supplier_confirmed_starts_the_clock_and_counts_a_decision() -> None:
    so = order(State.RECEIVED, supplier_order_ref="REF-0")
    so.accept(None, 24.0, T0)
    assert so.ship_by == T0 + timedelta(hours=24) and so.next_check_at is None
    [confirmed] = so.events
    assert isinstance(confirmed, SupplierConfirmed)
    assert confirmed.supplier_order_ref == "REF-0" and confirmed.currency == "USD"
    assert [(ln.line_id, ln.quantity, ln.unit_cost) for ln in confirmed.lines] == [
        ("ord_1-1", 2, Decimal("4.00")),
        ("ord_1-2", 1, Decimal("1.00")),
    ]
    assert so.tally == {"decided": 1, "accepted": 1}


def test_accepting_a_backorder_does_not_count_the_decision_twice() -> None:
    so = order(State.BACKORDERED)
    so.accept("REF-1", 48.0, T0)
    assert so.tally == {}


def test_a_backorder_delays_the_order_unless_its_lines_moved() -> None:
    kept = order(State.RECEIVED)
    kept.backorder("REF-1", T0, moved=False)
    [delay] = kept.events
    assert isinstance(delay, ShipmentDelayed)
    assert (delay.reason, delay.severity) == (DelayReason.SUPPLIER_BACKORDER, Severity.URGENT)
    moved = order(State.RECEIVED)
    moved.backorder("REF-1", T0, moved=True)
    assert moved.state is State.CANCEL_PENDING and moved.failure == "backordered"
    assert moved.events == [] and moved.tally == {"decided": 1}


def test_dispatch_before_acceptance_confirms_first_then_ships_on_time() -> None:
    so = order(State.RECEIVED)
    so.dispatch("dhl", "JD01", "REF-1", 48.0, T0 + timedelta(hours=1))
    assert [type(e) for e in so.events] == [SupplierConfirmed, ShipmentDispatched]
    shipped = so.events[1]
    assert isinstance(shipped, ShipmentDispatched)
    assert shipped.line_ids == ["ord_1-1", "ord_1-2"] and shipped.tracking_number == "JD01"
    assert so.tally == {"decided": 1, "accepted": 1, "shipped": 1, "shipped_on_time": 1}


def test_a_late_dispatch_is_counted_as_not_on_time() -> None:
    so = order(State.ACCEPTED)
    so.dispatch("dhl", "JD01", None, 48.0, T0 + timedelta(hours=49))
    assert so.tally == {"shipped": 1, "shipped_on_time": 0}


def test_a_dispatch_needs_a_tracking_number() -> None:
    so = order(State.ACCEPTED)
    with pytest.raises(ValueError, match="tracking"):
        so.dispatch("dhl", "", None, 48.0, T0)
    assert so.state is State.ACCEPTED


def test_rejections_and_failed_placements() -> None:
    rejected = order(State.SENDING)
    rejected.placing_failed(State.REJECTED, "Rejected: " + "x" * 300)
    assert rejected.tally == {"decided": 1} and len(rejected.failure or "") == 200
    out = order(State.SENDING)
    out.placing_failed(State.OUT_OF_STOCK, "OutOfStock: ['ACME-MUG']")
    assert out.state is State.OUT_OF_STOCK and not out.tally and out.lease_until is None
    with pytest.raises(ValueError):
        order(State.SENDING).placing_failed(State.ACCEPTED, "not a failure")


def test_delivery_and_carrier_exceptions() -> None:
    so = order(State.DISPATCHED)
    so.report_exception()
    assert so.tally == {"exceptions": 1} and so.state is State.DISPATCHED
    so.deliver(T0)
    delivered = so.events[-1]
    assert isinstance(delivered, ShipmentDelivered) and delivered.tracking_number == "1Z-1"


def test_sla_clock_fires_each_step_once() -> None:
    so = order(State.ACCEPTED)  # window 48 h
    assert so.check_sla(T0 + timedelta(hours=30)) == 0
    assert so.check_sla(T0 + timedelta(hours=36)) == 1  # at risk
    assert so.check_sla(T0 + timedelta(hours=48)) == 1  # deadline
    assert so.check_sla(T0 + timedelta(hours=60)) == 0
    assert so.check_sla(T0 + timedelta(hours=96)) == 1  # major
    assert so.check_sla(T0 + timedelta(hours=200)) == 0
    assert [(e.reason, e.severity) for e in so.events if isinstance(e, ShipmentDelayed)] == [
        (DelayReason.AT_RISK, Severity.NORMAL),
        (DelayReason.NO_TRACKING_BY_DEADLINE, Severity.URGENT),
        (DelayReason.NO_TRACKING_BY_DEADLINE, Severity.MAJOR),
    ]


def test_a_refused_cancellation_is_retried_with_growing_pauses_then_left_to_a_human() -> None:
    so = order(State.CANCELLING, attempts=3)
    so.cancel_refused(T0)
    assert so.state is State.CANCEL_PENDING and so.lease_until == T0 + timedelta(seconds=8)
    so.attempts = CANCEL_ATTEMPTS
    so.cancel_refused(T0)
    assert so.state is State.CANCEL_FAILED and so.lease_until is None


def test_given_up_orders_are_the_ones_a_late_acceptance_calls_off() -> None:
    assert {s for s in State if order(s).given_up} == {State.UNAVAILABLE, State.CANCELLED}


def test_an_unanswered_order_is_placed_again_under_its_own_id_or_kept_when_taken() -> None:
    so = order(State.UNAVAILABLE, failure="Unavailable: timeout")
    so.resend(T0 + timedelta(seconds=60))
    assert (so.id, so.state, so.failure) == ("so_1", State.SENDING, None)
    assert so.lease_until == T0 + timedelta(seconds=60)
    kept = order(State.UNAVAILABLE, failure="Unavailable: timeout")
    kept.taken_after_all("REF-9")
    assert (kept.state, kept.supplier_order_ref, kept.failure) == (State.RECEIVED, "REF-9", None)
    assert not kept.events and not kept.tally
