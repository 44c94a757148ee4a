"""After-sales rules with no I/O: returnable quantities, refund limits and cost, transitions."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.order.aftersales.domain import (
    SOURCES,
    Complaint,
    ComplaintTargets,
    ItemQty,
    Refund,
    RefundAsk,
    Return,
    ReturnStatus,
    issue_refund,
    paid,
    remaining,
    returnable,
)
from services.order.aftersales.errors import (
    ComplaintClosed,
    InvalidAfterSales,
    NothingShipped,
    RefundExceedsPaid,
    ReturnStatusConflict,
)
from services.order.domain import Address, Contact, LineInput, Order, PlaceOrder
from shared.events import (
    ComplaintFiled,
    ComplaintResolved,
    ComplaintResponded,
    ComplaintTier,
    ConfirmedLine,
    CostBearer,
    ReturnAuthorized,
    ReturnReason,
    ReturnRejected,
    ReturnRequested,
    ShipmentDispatched,
    SupplierConfirmed,
)

pytestmark = pytest.mark.unit
T0 = datetime(2026, 5, 1, 10, 0, tzinfo=UTC)
DAMAGED = ReturnReason.DAMAGED_IN_TRANSIT


def order(prices: tuple[str, ...] = ("12.50", "4.00"), qty: int = 2, currency: str = "USD"):
    cmd = PlaceOrder(
        channel="storefront",
        external_id=None,
        currency=currency,
        customer=Contact("Ann Lee", "ann@example.com"),
        shipping=Address("1 Main St", "Springfield", "10001", "US"),
        lines=tuple(LineInput(f"SKU-{i}", qty, Decimal(p)) for i, p in enumerate(prices)),
    )
    return Order.place(cmd, T0)


def ship(o: Order, supplier: str, line_ids: list[str], tracking: str) -> None:
    o.apply(
        SupplierConfirmed(
            order_id=o.id,
            supplier_id=supplier,
            supplier_order_ref=f"SO-{tracking}",
            lines=[ConfirmedLine(line_id=i, quantity=1, unit_cost=Decimal(1)) for i in line_ids],
            currency=o.currency,
            ship_by=T0 + timedelta(days=2),
        ),
        T0,
    )
    o.apply(
        ShipmentDispatched(
            order_id=o.id,
            supplier_id=supplier,
            carrier="ups",
            tracking_number=tracking,
            line_ids=line_ids,
            dispatched_at=T0,
        ),
        T0,
    )


def shipped_order(**kw):
    o = order(**kw)
    ship(o, "sup-a", [o.lines[0].line_id], "T1")
    ship(o, "sup-b", [o.lines[1].line_id], "T2")
    return o


def test_a_return_before_anything_shipped_is_refused_naming_the_status() -> None:
    o = order()
    with pytest.raises(NothingShipped, match="has not shipped anything"):
        Return.request(o, [], DAMAGED, [ItemQty(o.lines[0].line_id, 1)], None, T0)


def test_quantities_are_checked_against_what_shipped_and_earlier_returns() -> None:
    o = order()
    ship(o, "sup-a", [o.lines[0].line_id], "T1")
    first_line, unshipped = o.lines[0].line_id, o.lines[1].line_id
    first = Return.request(o, [], DAMAGED, [ItemQty(first_line, 1)], "cracked", T0)
    assert first.status is ReturnStatus.REQUESTED and first.supplier_id == "sup-a"
    [event] = first.events
    assert isinstance(event, ReturnRequested) and event.lines[0].sku == "SKU-0"
    assert returnable(o, [first]) == {first_line: 1}
    with pytest.raises(InvalidAfterSales) as too_many:
        Return.request(o, [first], DAMAGED, [ItemQty(first_line, 2)], None, T0)
    assert too_many.value.details == [
        {
            "field": "lines.0.quantity",
            "reason": "at most 1 returnable (2 shipped, 1 in earlier returns)",
        }
    ]
    with pytest.raises(InvalidAfterSales) as not_shipped:
        Return.request(o, [first], DAMAGED, [ItemQty(unshipped, 1)], None, T0)
    assert not_shipped.value.details[0]["field"] == "lines.0.line_id"
    first.reject("no photos", T0)
    assert returnable(o, [first]) == {first_line: 2}, "a rejected return frees its quantity"


def test_lines_of_two_suppliers_make_two_returns() -> None:
    o = shipped_order()
    wanted = [ItemQty(ln.line_id, 1) for ln in o.lines]
    with pytest.raises(InvalidAfterSales, match="file one return per supplier") as err:
        Return.request(o, [], DAMAGED, wanted, None, T0)
    assert "sup-a" in str(err.value) and "sup-b" in str(err.value)


@pytest.mark.parametrize("action", sorted(SOURCES))
@pytest.mark.parametrize("status", list(ReturnStatus))
def test_every_move_only_from_its_statuses(action: str, status: ReturnStatus) -> None:
    o = shipped_order()
    ret = Return.request(o, [], DAMAGED, [ItemQty(o.lines[0].line_id, 1)], None, T0)
    ret.status = status
    ret.events.clear()
    move = {
        "authorize": lambda: ret.authorize("RMA-1", "Dock 1", None, T0),
        "reject": lambda: ret.reject("why", T0),
        "receive": lambda: ret.receive(None, T0),
        "refund": lambda: ret.refunded("rfd_1", T0),
    }[action]
    if status in SOURCES[action]:
        move()
        assert ret.status is not status
    else:
        with pytest.raises(ReturnStatusConflict, match=f"is {status.value}"):
            move()
        assert ret.status is status and not ret.events, "nothing changed"


def test_authorize_and_reject_record_their_events() -> None:
    o = shipped_order()
    ret = Return.request(o, [], DAMAGED, [ItemQty(o.lines[0].line_id, 2)], None, T0)
    ret.authorize("RMA-9", "Returns, Dock 1", None, T0)
    assert isinstance(ret.events[-1], ReturnAuthorized)
    assert ret.events[-1].rma == "RMA-9" and ret.events[-1].supplier_id == "sup-a"
    ret.reject("never sent back", T0)
    assert isinstance(ret.events[-1], ReturnRejected) and ret.note == "never sent back"


def ask(amount: str | None = None, lines=(), reason=ReturnReason.CHANGED_MIND, return_id=None):
    return RefundAsk(Decimal(amount) if amount else None, tuple(lines), reason, return_id)


def test_a_refund_never_exceeds_what_remains_of_what_was_paid() -> None:
    o = shipped_order()  # 2 x 12.50 + 2 x 4.00 = 33.00
    assert paid(o) == Decimal("33.00")
    first = issue_refund(o, [], ask("30.00"), None, T0)
    with pytest.raises(RefundExceedsPaid) as err:
        issue_refund(o, [first], ask("3.01"), None, T0)
    assert err.value.details == {"remaining": "3.00", "paid": "33.00", "currency": "USD"}
    last = issue_refund(o, [first], ask("3.00"), None, T0)
    assert remaining(o, [first, last]) == 0


def test_refund_lines_value_precision_and_quantities() -> None:
    o = shipped_order()
    a, b = o.lines[0].line_id, o.lines[1].line_id
    by_lines = issue_refund(o, [], ask(lines=[ItemQty(a, 1)]), None, T0)
    assert by_lines.amount == Decimal("12.50") and by_lines.lines[0].supplier_id == "sup-a"
    with pytest.raises(InvalidAfterSales) as err:
        issue_refund(o, [by_lines], ask(lines=[ItemQty(a, 2)]), None, T0)
    assert err.value.details == [
        {"field": "lines.0.quantity", "reason": "at most 1 left to refund (2 ordered, 1 refunded)"}
    ]
    with pytest.raises(InvalidAfterSales, match=r"at most 8\.00 for the lines"):
        issue_refund(o, [], ask("8.01", [ItemQty(b, 2)]), None, T0)
    with pytest.raises(InvalidAfterSales, match="at most 2 decimals"):
        issue_refund(o, [], ask("1.001"), None, T0)
    with pytest.raises(InvalidAfterSales, match="amount: required"):
        issue_refund(o, [], ask(), None, T0)
    with pytest.raises(InvalidAfterSales, match="reason: required"):
        issue_refund(o, [], RefundAsk(Decimal(1), (), None), None, T0)


def test_the_cost_follows_the_reason_and_the_supplier_that_shipped() -> None:
    o = shipped_order()
    a = o.lines[0].line_id
    damaged = issue_refund(o, [], ask(lines=[ItemQty(a, 1)], reason=DAMAGED), None, T0)
    assert (damaged.cost_bearer, damaged.supplier_id) == (CostBearer.SUPPLIER, "sup-a")
    assert damaged.event().channel == "storefront" and damaged.event().amount == Decimal("12.50")
    mind = issue_refund(o, [], ask("1.00"), None, T0)
    assert (mind.cost_bearer, mind.supplier_id) == (CostBearer.MERCHANT, None)
    with pytest.raises(InvalidAfterSales, match="one supplier at a time"):
        issue_refund(o, [], ask("1.00", reason=ReturnReason.WRONG_ITEM), None, T0)


def test_a_cancelled_never_shipped_order_is_refunded_at_the_merchants_cost() -> None:
    o = order()
    o.cancel("customer asked")
    refund = issue_refund(o, [], ask("33.00", reason=DAMAGED), None, T0)
    assert refund.cost_bearer is CostBearer.MERCHANT and refund.supplier_id is None


def test_a_refund_closing_a_return_takes_its_lines_and_reason() -> None:
    o = shipped_order()
    ret = Return.request(o, [], DAMAGED, [ItemQty(o.lines[0].line_id, 2)], None, T0)
    with pytest.raises(ReturnStatusConflict, match="is requested: cannot refund"):
        issue_refund(o, [], ask(reason=None, return_id=ret.id), ret, T0)
    ret.authorize("RMA-1", "Dock", None, T0)
    ret.receive(None, T0)
    refund = issue_refund(o, [], ask(reason=None, return_id=ret.id), ret, T0)
    assert refund.amount == Decimal("25.00") and refund.reason is DAMAGED
    assert (refund.cost_bearer, refund.supplier_id, refund.return_id) == (
        CostBearer.SUPPLIER,
        "sup-a",
        ret.id,
    )


amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("40"), places=2)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            amounts.map(lambda a: ("amount", a)),
            st.tuples(st.sampled_from([0, 1]), st.integers(1, 3)).map(lambda t: ("lines", t)),
        ),
        max_size=12,
    )
)
def test_refunds_never_exceed_what_was_paid_under_any_sequence(asks: list) -> None:
    o = shipped_order()
    issued: list[Refund] = []
    for kind, value in asks:
        if kind == "amount":
            request = ask(str(value))
        else:
            request = ask(lines=[ItemQty(o.lines[value[0]].line_id, value[1])], reason=DAMAGED)
        with contextlib.suppress(InvalidAfterSales, RefundExceedsPaid):
            issued.append(issue_refund(o, issued, request, None, T0))
        assert sum(r.amount for r in issued) <= paid(o)
        for line in o.lines:
            refunded = sum(q.quantity for r in issued for q in r.lines if q.line_id == line.line_id)
            assert refunded <= line.quantity


def test_complaint_clocks_first_response_and_resolution() -> None:
    targets = ComplaintTargets.default()
    c = Complaint.file("ord_1", ComplaintTier.URGENT, "it broke", targets, T0)
    assert c.respond_by == T0 + timedelta(hours=4) and c.resolve_by == T0 + timedelta(hours=48)
    assert isinstance(c.events[0], ComplaintFiled) and c.status == "open"
    assert c.respond("ops-li", "sorry, looking", T0 + timedelta(minutes=5)) is True
    assert c.respond("ops-li", "found it", T0 + timedelta(minutes=9)) is False
    assert [type(e) for e in c.events] == [ComplaintFiled, ComplaintResponded]
    assert c.responded_at == T0 + timedelta(minutes=5) and c.status == "responded"
    c.resolve("ops-li", "refunded", T0 + timedelta(hours=1))
    assert isinstance(c.events[-1], ComplaintResolved) and c.status == "resolved"
    with pytest.raises(ComplaintClosed):
        c.resolve("ops-li", "again", T0)
    with pytest.raises(ComplaintClosed):
        c.respond("ops-li", "late", T0)
    assert "it broke" not in repr([e.model_dump() for e in c.events])


def test_resolving_an_unanswered_complaint_is_its_first_response() -> None:
    c = Complaint.file("ord_1", ComplaintTier.MAJOR, "lost", ComplaintTargets.default(), T0)
    assert c.respond_by == T0 + timedelta(hours=1)
    c.resolve("ops-wang", "reshipped", T0 + timedelta(minutes=30))
    assert [type(e) for e in c.events] == [ComplaintFiled, ComplaintResponded, ComplaintResolved]
