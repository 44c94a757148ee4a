"""Lines whose suppliers are all temporarily unavailable wait and are routed again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.supplier.adapter import Rejected, Unavailable
from services.supplier.domain import State
from services.supplier.handlers import dispatch
from services.supplier.handlers.waiting import retry_waiting
from shared.events import (
    OrderLinesWaiting,
    OrderRoutingFailed,
    RoutingFailureReason,
    SupplierAvailability,
    SupplierStatusChanged,
    WaitingReason,
)
from tests.unit.test_supplier_handlers import BACKUP, CHEAP, callback, only, place, world


def later() -> datetime:
    """An hour after now, when the test runs (not when the suite was collected: a slow
    suite reaches these tests more than an hour after collecting them)."""
    return datetime.now(UTC) + timedelta(hours=1)


async def test_a_line_whose_only_supplier_is_unreachable_waits_instead_of_failing() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    await dispatch.record_send(uow, only(uow, order_id, State.SENDING).id, Unavailable("http 503"))
    [waiting] = uow.of_type(OrderLinesWaiting)
    assert waiting.line_ids == [f"{order_id}-1"] and waiting.reason is WaitingReason.SERVER_ERROR
    assert not uow.of_type(OrderRoutingFailed)
    assert uow.offers.stock(CHEAP, "MUG") == 10, "its stock is given back while it waits"

    assert await retry_waiting(uow, later()) == 1
    again = only(uow, order_id, State.SENDING)
    assert again.supplier_id == CHEAP
    assert await retry_waiting(uow, later()) == 0, "taken: not tried twice"


async def test_a_waiting_line_goes_back_to_its_supplier_under_the_same_key() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    first = only(uow, order_id, State.SENDING)
    await dispatch.record_send(uow, first.id, Unavailable("timeout"))
    uow.handed_off.clear()

    await retry_waiting(uow, later())
    again = only(uow, order_id, State.SENDING)
    assert again.id == first.id, "the timed-out order may exist there: asked for under its key"
    assert [o.id for o in uow.handed_off] == [first.id]
    assert not uow.supplier_orders.in_state(order_id, State.UNAVAILABLE)
    assert uow.offers.stock(CHEAP, "MUG") == 9


async def test_waiting_again_backs_off_and_announces_once() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    await dispatch.record_send(uow, only(uow, order_id, State.SENDING).id, Unavailable("timeout"))
    await retry_waiting(uow, later())
    await dispatch.record_send(
        uow, only(uow, order_id, State.SENDING).id, Unavailable("breaker open", attempts=0)
    )
    assert [w.reason for w in uow.of_type(OrderLinesWaiting)] == [WaitingReason.TIMEOUT]
    assert uow.waiting.rows[(order_id, f"{order_id}-1")][0] == "breaker_open"
    assert not uow.of_type(OrderRoutingFailed)


async def test_a_recovered_supplier_retries_waiting_lines_at_once() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    await dispatch.record_send(uow, only(uow, order_id, State.SENDING).id, Unavailable("http 429"))
    assert uow.of_type(OrderLinesWaiting)[0].reason is WaitingReason.RATE_LIMITED
    now = datetime.now(UTC)
    assert await retry_waiting(uow, now) == 0, "not due yet"
    back = SupplierStatusChanged(
        supplier_id=CHEAP, status=SupplierAvailability.AVAILABLE, reason="closed", changed_at=now
    )
    await dispatch.record_availability(uow, back)
    assert await retry_waiting(uow, now + timedelta(seconds=1)) == 1


async def test_a_waiting_line_whose_stock_others_took_meanwhile_fails_instead_of_waiting() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    await dispatch.record_send(uow, only(uow, order_id, State.SENDING).id, Unavailable("timeout"))
    assert uow.of_type(OrderLinesWaiting)
    other = await place(uow, ("MUG", 10, "12.50"))  # the supplier's whole stock, meanwhile
    assert only(uow, other, State.SENDING).supplier_id == CHEAP

    await retry_waiting(uow, later())
    [failed] = uow.of_type(OrderRoutingFailed)
    assert failed.line_ids == [f"{order_id}-1"]
    assert failed.reason is RoutingFailureReason.OUT_OF_STOCK
    assert not uow.waiting.rows, "no wait can bring stock back: the line is not retried for ever"


async def test_a_line_holding_the_whole_stock_waits_on_the_stock_it_gives_back() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 10, "12.50"))
    await dispatch.record_send(uow, only(uow, order_id, State.SENDING).id, Unavailable("timeout"))
    assert not uow.of_type(OrderRoutingFailed)
    [waiting] = uow.of_type(OrderLinesWaiting)
    assert waiting.line_ids == [f"{order_id}-1"]
    assert uow.offers.stock(CHEAP, "MUG") == 10


async def test_a_waiting_line_the_supplier_accepts_is_no_longer_waiting() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    await dispatch.record_send(uow, only(uow, order_id, State.SENDING).id, Unavailable("timeout"))
    await retry_waiting(uow, later())
    assert uow.waiting.rows, "tried again, still waiting until a supplier confirms"
    await callback(uow, only(uow, order_id, State.SENDING), "accepted")
    assert not uow.waiting.rows


async def test_a_rejection_after_waiting_needs_attention() -> None:
    uow = world(backup=False)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    await dispatch.record_send(uow, only(uow, order_id, State.SENDING).id, Unavailable("timeout"))
    await retry_waiting(uow, later())
    await dispatch.record_send(uow, only(uow, order_id, State.SENDING).id, Rejected("no"))
    [failed] = uow.of_type(OrderRoutingFailed)
    assert failed.reason is RoutingFailureReason.ALL_SUPPLIERS_FAILED
    assert not uow.waiting.rows


async def test_a_rejection_while_another_supplier_is_only_unreachable_waits() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 1, "12.50"))
    await dispatch.record_send(uow, only(uow, order_id, State.SENDING).id, Unavailable("timeout"))
    moved = only(uow, order_id, State.SENDING)
    assert moved.supplier_id == BACKUP
    await dispatch.record_send(uow, moved.id, Rejected("no"))
    assert not uow.of_type(OrderRoutingFailed)
    [waiting] = uow.of_type(OrderLinesWaiting)
    assert waiting.line_ids == [f"{order_id}-1"]
    await retry_waiting(uow, later())
    assert only(uow, order_id, State.SENDING).supplier_id == CHEAP


async def hold(uow, order_id: str, at: datetime) -> None:
    from services.supplier.handlers import events
    from shared.events import HoldReason, OrderHeld, new_envelope

    data = OrderHeld(order_id=order_id, reason=HoldReason.MANUAL, held_at=at)
    async with uow:
        await events.on_order_held(new_envelope(data), data, uow)
        await uow.commit()


async def release(uow, order_id: str, at: datetime) -> None:
    from services.supplier.handlers import events
    from shared.events import OrderReleased, new_envelope

    data = OrderReleased(order_id=order_id, released_at=at)
    async with uow:
        await events.on_order_released(new_envelope(data), data, uow)
        await uow.commit()


async def test_a_hold_consumed_before_its_order_parks_it_until_released() -> None:
    uow = world()
    now = datetime.now(UTC)
    await hold(uow, "ord_1", now)
    order_id = await place(uow, ("MUG", 1, "12.50"))
    assert order_id == "ord_1" and not uow.supplier_orders.rows
    await release(uow, order_id, now + timedelta(seconds=1))
    assert only(uow, order_id, State.SENDING).supplier_id == CHEAP


async def test_a_release_consumed_before_its_hold_leaves_the_order_free() -> None:
    uow = world()
    now = datetime.now(UTC)
    await release(uow, "ord_1", now + timedelta(seconds=1))
    await hold(uow, "ord_1", now)  # the older hold, consumed late
    order_id = await place(uow, ("MUG", 1, "12.50"))
    assert only(uow, order_id, State.SENDING).supplier_id == CHEAP


async def test_a_held_order_routes_nothing_more_until_released() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 1, "12.50"))
    now = datetime.now(UTC)
    await hold(uow, order_id, now)
    await dispatch.record_send(uow, only(uow, order_id, State.SENDING).id, Rejected("no"))
    assert not uow.supplier_orders.in_state(order_id, State.SENDING), "no fail-over while held"
    assert uow.offers.stock(CHEAP, "MUG") == 10
    await release(uow, order_id, now + timedelta(seconds=1))
    assert only(uow, order_id, State.SENDING).supplier_id == BACKUP


async def test_a_supplier_called_off_for_taking_an_order_late_may_take_the_line_again() -> None:
    uow = world()
    order_id = await place(uow, ("MUG", 1, "12.50"))
    slow = only(uow, order_id, State.SENDING)
    await dispatch.record_send(uow, slow.id, Unavailable("timeout"))
    backup = only(uow, order_id, State.SENDING)
    assert backup.supplier_id == BACKUP
    await callback(uow, slow, "accepted", supplier_order_ref="LATE")  # called off: line is away
    assert only(uow, order_id, State.CANCEL_PENDING).id == slow.id

    await callback(uow, backup, "rejected", reason="discontinued")
    assert not uow.of_type(OrderRoutingFailed), "the slow supplier never failed the line"
    assert uow.of_type(OrderLinesWaiting)
    await retry_waiting(uow, later())
    assert only(uow, order_id, State.SENDING).supplier_id == CHEAP
