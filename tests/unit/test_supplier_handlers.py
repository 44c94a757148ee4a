"""Supplier handlers driven through an in-memory unit of work: routing, callbacks, calls, clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.supplier.adapter import OutOfStock, Received, Rejected, SupplierStatus, Unavailable
from services.supplier.domain import InvalidCsv, InvalidOffers, Offer, State, SupplierOrder
from services.supplier.handlers import callbacks, commands, dispatch, events
from services.supplier.handlers.callbacks import Outcome, SupplierCallback, TrackingUpdate
from shared.events import (
    DelayReason,
    OrderCancelled,
    OrderPlaced,
    OrderRoutingFailed,
    PlacedLine,
    RoutingFailureReason,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
    new_envelope,
)
from tests.unit.supplier_fakes import FakeUnitOfWork, entry

CHEAP, BACKUP = "sup_cheap", "sup_backup"


def world(*, backup: bool = True) -> FakeUnitOfWork:
    uow = FakeUnitOfWork()
    suppliers = [(CHEAP, "3.00"), (BACKUP, "5.00")] if backup else [(CHEAP, "3.00")]
    for supplier_id, cost in suppliers:
        uow.suppliers.entries_by_id[supplier_id] = entry(supplier_id, sla=24.0)
        uow.offers.rows[(supplier_id, "MUG")] = Offer(
            supplier_id, "MUG", f"{supplier_id}-MUG", Decimal(cost), "USD", 10, 24.0
        )
    return uow


async def place(uow: FakeUnitOfWork, *lines: tuple[str, int, str]) -> str:
    order_id = f"ord_{len(uow.routing_requests.rows) + 1}"
    data = OrderPlaced(
        order_id=order_id,
        channel="storefront",
        currency="USD",
        lines=[
            PlacedLine(line_id=f"{order_id}-{i}", sku=sku, quantity=q, unit_price=Decimal(p))
            for i, (sku, q, p) in enumerate(lines, start=1)
        ],
        shipping_country="US",
        shipping_postal_code="10001",
        placed_at=datetime.now(UTC),
    )
    async with uow:  # as the consumer runs it: the handler in one unit of work
        await events.on_order_placed(new_envelope(data), data, uow)
        await uow.commit()
    return order_id


def only(uow: FakeUnitOfWork, order_id: str, state: State) -> SupplierOrder:
    [so] = uow.supplier_orders.in_state(order_id, state)
    return so


async def callback(uow: FakeUnitOfWork, so: SupplierOrder, kind: Any, **more: Any) -> Outcome:
    delivery = f"d-{len(uow.deliveries.seen)}"
    return await callbacks.supplier_callback(
        uow, so.supplier_id, delivery, SupplierCallback(kind, so.id, **more)
    )


async def test_a_placed_order_goes_to_the_best_offer_reserves_stock_and_is_handed_over() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 2, "12.50"))
    so = only(uow, order_id, State.SENDING)
    assert so.supplier_id == CHEAP and so.lease_until is not None
    assert uow.offers.stock(CHEAP, "MUG") == 8
    [sent] = uow.handed_off
    assert (sent.id, sent.lines, sent.ship_country) == (so.id, ((f"{CHEAP}-MUG", 2),), "US")


async def test_an_order_without_offers_is_reported_unroutable() -> None:
    uow = world()
    order_id = await place(uow, ("TEA", 1, "4.00"))
    [failed] = uow.of_type(OrderRoutingFailed)
    assert (failed.order_id, failed.reason) == (order_id, RoutingFailureReason.NO_OFFER)
    assert not uow.supplier_orders.rows and not uow.handed_off


async def test_an_order_cancelled_before_it_arrived_is_never_routed() -> None:
    uow = world()
    cancel = OrderCancelled(order_id="ord_1", reason="changed mind")
    async with uow:
        await events.on_order_cancelled(new_envelope(cancel), cancel, uow)
    await place(uow, ("MUG", 1, "12.50"))
    assert not uow.supplier_orders.rows and uow.offers.stock(CHEAP, "MUG") == 10


async def test_accepted_callback_confirms_once_and_a_redelivery_changes_nothing() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 1, "12.50"))
    so = only(uow, order_id, State.SENDING)
    cb = SupplierCallback("accepted", so.id, supplier_order_ref="REF-1")
    assert await callbacks.supplier_callback(uow, CHEAP, "d-1", cb) is Outcome.ACCEPTED
    assert await callbacks.supplier_callback(uow, CHEAP, "d-1", cb) is Outcome.DUPLICATE
    assert await callbacks.supplier_callback(uow, CHEAP, "d-2", cb) is Outcome.IGNORED
    [confirmed] = uow.of_type(SupplierConfirmed)
    assert confirmed.supplier_order_ref == "REF-1"
    accepted = only(uow, order_id, State.ACCEPTED)
    assert accepted.ship_by is not None and accepted.sla_hours == 24.0
    assert uow.tally[CHEAP] == {"decided": 1, "accepted": 1}


async def test_a_callback_for_another_suppliers_order_is_unknown() -> None:
    uow = world()
    so = only(uow, await place(uow, ("MUG", 1, "12.50")), State.SENDING)
    cb = SupplierCallback("accepted", so.id)
    assert await callbacks.supplier_callback(uow, BACKUP, "d-1", cb) is Outcome.UNKNOWN_ORDER


async def test_a_rejection_fails_the_lines_over_to_the_next_supplier() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 1, "12.50"))
    first = only(uow, order_id, State.SENDING)
    assert await callback(uow, first, "rejected", reason="no stock") is Outcome.REJECTED
    assert only(uow, order_id, State.REJECTED).failure == "no stock"
    moved = only(uow, order_id, State.SENDING)
    assert moved.supplier_id == BACKUP
    assert uow.offers.stock(CHEAP, "MUG") == 10 and uow.offers.stock(BACKUP, "MUG") == 9


async def test_when_every_supplier_rejects_the_order_is_reported_unroutable() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    await callback(uow, only(uow, order_id, State.SENDING), "rejected")
    [failed] = uow.of_type(OrderRoutingFailed)
    assert failed.reason is RoutingFailureReason.ALL_SUPPLIERS_FAILED


async def test_a_backorder_fails_over_when_someone_else_has_every_line() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 1, "12.50"))
    first = only(uow, order_id, State.SENDING)
    assert await callback(uow, first, "backordered") is Outcome.FAILED_OVER
    assert only(uow, order_id, State.CANCEL_PENDING).id == first.id
    assert only(uow, order_id, State.SENDING).supplier_id == BACKUP
    assert not uow.of_type(ShipmentDelayed)


async def test_a_backorder_nobody_else_can_take_delays_the_order() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    assert await callback(uow, only(uow, order_id, State.SENDING), "backordered") == "backordered"
    [delay] = uow.of_type(ShipmentDelayed)
    assert delay.reason is DelayReason.SUPPLIER_BACKORDER
    assert only(uow, order_id, State.BACKORDERED).next_check_at is not None


async def test_a_late_acceptance_of_an_order_we_gave_up_on_is_called_off() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 1, "12.50"))
    so = only(uow, order_id, State.SENDING)
    await dispatch.record_send(uow, so.id, Unavailable("timeout"))
    assert only(uow, order_id, State.UNAVAILABLE)
    assert only(uow, order_id, State.SENDING).supplier_id == BACKUP, "its line went elsewhere"
    outcome = await callback(uow, so, "accepted", supplier_order_ref="LATE")
    assert outcome is Outcome.CANCELLING_LATE_ACCEPTANCE
    assert only(uow, order_id, State.CANCEL_PENDING).supplier_order_ref == "LATE"
    assert not uow.of_type(SupplierConfirmed)


async def test_a_late_acceptance_of_an_order_whose_lines_wait_for_it_is_kept() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    so = only(uow, order_id, State.SENDING)
    await dispatch.record_send(uow, so.id, Unavailable("timeout"))
    assert uow.waiting.rows and uow.offers.stock(CHEAP, "MUG") == 10
    outcome = await callback(uow, so, "accepted", supplier_order_ref="LATE")
    assert outcome is Outcome.ACCEPTED
    kept = only(uow, order_id, State.ACCEPTED)
    assert (kept.id, kept.supplier_order_ref) == (so.id, "LATE")
    assert [c.supplier_order_ref for c in uow.of_type(SupplierConfirmed)] == ["LATE"]
    assert not uow.waiting.rows and uow.offers.stock(CHEAP, "MUG") == 9
    assert not uow.of_type(OrderRoutingFailed)


async def test_dispatch_before_acceptance_confirms_then_ships_and_tracking_delivers() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 1, "12.50"))
    so = only(uow, order_id, State.SENDING)
    outcome = await callback(uow, so, "dispatched", carrier="ups", tracking_number="1Z")
    assert outcome is Outcome.DISPATCHED
    assert [type(e) for e in uow.committed] == [SupplierConfirmed, ShipmentDispatched]
    exception = TrackingUpdate("1Z", "exception")
    assert await callbacks.tracking_update(uow, "t-1", exception) is Outcome.EXCEPTION
    delivered = TrackingUpdate("1Z", "delivered", datetime(2024, 5, 2, 9, 0))
    assert await callbacks.tracking_update(uow, "t-2", delivered) is Outcome.DELIVERED
    [done] = uow.of_type(ShipmentDelivered)
    assert done.delivered_at == datetime(2024, 5, 2, 9, 0, tzinfo=UTC)
    again = TrackingUpdate("1Z", "delivered")
    assert await callbacks.tracking_update(uow, "t-3", again) is Outcome.RECORDED
    unknown = TrackingUpdate("NOPE", "delivered")
    assert await callbacks.tracking_update(uow, "t-4", unknown) is Outcome.UNKNOWN_TRACKING_NUMBER


async def test_out_of_stock_empties_the_offer_and_fails_over_without_giving_stock_back() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 1, "12.50"))
    so = only(uow, order_id, State.SENDING)
    await dispatch.record_send(uow, so.id, OutOfStock([f"{CHEAP}-MUG"]))
    assert only(uow, order_id, State.OUT_OF_STOCK).failure == f"OutOfStock: ['{CHEAP}-MUG']"
    assert uow.offers.stock(CHEAP, "MUG") == 0
    assert only(uow, order_id, State.SENDING).supplier_id == BACKUP


async def test_a_placing_outcome_after_a_callback_decided_changes_nothing() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 1, "12.50"))
    so = only(uow, order_id, State.SENDING)
    await callback(uow, so, "accepted")
    await dispatch.record_send(uow, so.id, Rejected("too late"))
    assert only(uow, order_id, State.ACCEPTED) and uow.tally[CHEAP] == {"decided": 1, "accepted": 1}


async def test_the_reconcilers_status_is_applied_like_a_callback() -> None:
    uow = world()
    so = only(uow, await place(uow, ("MUG", 1, "12.50")), State.SENDING)
    status = SupplierStatus("REF-7", "delivered", carrier="dhl", tracking_number="JD1")
    # delivered at the supplier: dispatched, then delivered (the carrier's updates may be lost)
    assert await callbacks.record_status(uow, CHEAP, so.id, status) is Outcome.DELIVERED
    assert only(uow, so.order_id, State.DELIVERED).tracking_number == "JD1"
    undecided = SupplierStatus("REF-7", "received")
    assert await callbacks.record_status(uow, CHEAP, so.id, undecided) is Outcome.UNDECIDED


async def test_cancelling_an_order_calls_off_live_supplier_orders_and_gives_stock_back() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 2, "12.50"))
    cancel = OrderCancelled(order_id=order_id, reason="changed mind")
    async with uow:
        await events.on_order_cancelled(new_envelope(cancel), cancel, uow)
        await uow.commit()
    so = only(uow, order_id, State.CANCEL_PENDING)
    assert uow.offers.stock(CHEAP, "MUG") == 10
    await dispatch.record_cancel(uow, so.id, cancelled=False)
    assert only(uow, order_id, State.CANCEL_PENDING).lease_until is not None
    await dispatch.record_cancel(uow, so.id, cancelled=True)
    assert only(uow, order_id, State.CANCELLED)


async def test_received_and_sla_clock() -> None:
    uow = world()
    so = only(uow, await place(uow, ("MUG", 1, "12.50")), State.SENDING)
    await callback(uow, so, "accepted")
    late = datetime.now(UTC) + timedelta(hours=100)
    assert await dispatch.scan_sla(uow, late) == 3
    assert await dispatch.scan_sla(uow, late) == 0
    assert len(uow.of_type(ShipmentDelayed)) == 3


async def test_record_send_of_a_received_order_goes_through_the_batch() -> None:
    recorded: list[list[tuple[str, str]]] = []

    class Batch:
        async def mark_received(self, sent: list[tuple[str, str]], check_after: object) -> None:
            recorded.append(sent)

    uow = world()
    uow.supplier_orders = Batch()  # type: ignore[assignment]
    await dispatch.record_send(uow, "so_1", Received("REF-1"))
    assert recorded == [[("so_1", "REF-1")]] and uow.commits == 1


async def test_offer_commands_check_every_item_before_writing() -> None:
    uow = world()
    offers = [
        Offer(CHEAP, "CUP", "C1", Decimal("1.00001"), "USD", 1, 1.0),
        Offer(CHEAP, "CUP", "C2", Decimal("1.00"), "USD", 1, 1.0),
    ]
    with pytest.raises(InvalidOffers) as bad:
        await commands.upsert_offers(uow, CHEAP, offers)
    assert [d["field"] for d in bad.value.details] == ["body.0.unit_cost", "body.1.sku"]
    assert (CHEAP, "CUP") not in uow.offers.rows
    csv = b"sku,supplier_id,supplier_sku,unit_cost,currency,stock,lead_time_hours\n"
    with pytest.raises(InvalidCsv) as refused:
        await commands.import_offers(uow, csv + b"CUP,sup_nobody,C1,1.00,USD,1,1\n")
    assert refused.value.details == [
        {"line": 2, "column": "supplier_id", "reason": "unknown supplier 'sup_nobody'"}
    ]
    assert await commands.import_offers(uow, csv + f"CUP,{CHEAP},C1,1.00,USD,1,1\n".encode()) == 1
    assert uow.offers.stock(CHEAP, "CUP") == 1
