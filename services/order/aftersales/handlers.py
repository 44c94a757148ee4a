"""After-sales handlers: one unit of work each, domain results; routes translate.

Authorising a return is the one step with a side effect outside our database (the
supplier's RMA), and it is crash-safe without a pending state of our own:

1. a first unit of work checks the return is `requested` and reads what to ask for;
2. outside any transaction the supplier is asked, idempotent on the return id (the
   supplier service sends it as the supplier API's `Idempotency-Key`);
3. a second unit of work records the answer if the return is still `requested`.

A crash (or a timeout, or a 503) between 2 and 3 leaves the return `requested` with
nothing recorded; asking again sends the same key, and the supplier answers with the RMA
it granted the first time, never a second one with another number. A twin request that
raced us to step 3 finds the return moved on and gets the usual 409 naming its status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.order.aftersales.domain import (
    Complaint,
    ComplaintTargets,
    ItemQty,
    Refund,
    RefundAsk,
    Return,
    issue_refund,
)
from services.order.aftersales.errors import (
    ComplaintNotFound,
    InvalidAfterSales,
    ReturnNotFound,
)
from services.order.aftersales.repository import Complaints, Refunds, Returns
from services.order.aftersales.rma import RmaAsk, RmaDesk, RmaGranted
from services.order.domain import Note, Order
from services.order.errors import IdempotencyConflict, OrderNotFound
from services.order.store import OrderUnitOfWork
from shared import faults
from shared.events import ComplaintTier, EventData, ReturnReason


def returns(uow: OrderUnitOfWork) -> Returns:
    return Returns(uow.session, uow.cipher)


def refunds(uow: OrderUnitOfWork) -> Refunds:
    return Refunds(uow.session)


def complaints(uow: OrderUnitOfWork) -> Complaints:
    return Complaints(uow.session, uow.cipher)


def _now() -> datetime:
    return datetime.now(UTC)


async def _record(
    order_id: str, events: list[EventData], notes: list[Note], uow: OrderUnitOfWork
) -> None:
    """New events to the outbox and the order's timeline; notes to the timeline."""
    for note in notes:
        await uow.timeline.record(order_id, note)
    notes.clear()
    for event in events:
        await uow.timeline.add(uow.emit(event))
    events.clear()


async def _order(order_id: str, uow: OrderUnitOfWork, *, for_update: bool = False) -> Order:
    order = await uow.orders.get(order_id, for_update=for_update)
    if order is None:
        raise OrderNotFound(order_id)
    return order


# -- returns ---------------------------------------------------------------------------
async def request_return(
    order_id: str,
    reason: ReturnReason,
    lines: Sequence[ItemQty],
    note: str | None,
    uow: OrderUnitOfWork,
) -> Return:
    """A `requested` return of shipped lines (`NothingShipped`, `InvalidAfterSales`)."""
    async with uow:
        order = await _order(order_id, uow, for_update=True)  # one return at a time per order
        earlier = await returns(uow).of_order(order_id)
        ret = Return.request(order, earlier, reason, lines, note, _now())
        await returns(uow).add(ret)
        await _record(order_id, ret.events, ret.notes, uow)
        await uow.commit()
    return ret


async def get_return(return_id: str, uow: OrderUnitOfWork) -> Return:
    async with uow:
        ret = await returns(uow).get(return_id)
    if ret is None:
        raise ReturnNotFound(return_id)
    return ret


async def list_returns(
    status: str | None, order_id: str | None, limit: int, cursor: str | None, uow: OrderUnitOfWork
) -> tuple[list[Return], str | None]:
    async with uow:
        return await returns(uow).page(status, order_id, limit, cursor)


async def authorize_return(
    return_id: str, note: str | None, uow: OrderUnitOfWork, desk: RmaDesk
) -> Return:
    """Ask the supplier for an RMA and record its answer (see the module docstring).

    Granted: `authorized` with the RMA and address. Refused: `rejected`, the supplier's
    reason in `note`. No answer: `RmaUnavailable`, the return stays `requested`.
    """
    ret = await get_return(return_id, uow)
    ret.check("authorize")
    if ret.supplier_id is None:
        raise InvalidAfterSales(
            [("return_id", "no supplier is known for its lines: reject it or handle it by hand")]
        )
    answer = await desk.ask(
        RmaAsk(ret.id, ret.order_id, ret.supplier_id, ret.reason, tuple(ret.lines))
    )
    faults.crash_point("order.rma-answered")  # the supplier granted; nothing recorded yet
    async with uow:
        ret = await _return(return_id, uow, for_update=True)
        if isinstance(answer, RmaGranted):
            ret.authorize(answer.rma, answer.return_address, note, _now())
        else:
            ret.reject(f"the supplier refused the return: {answer.reason}", _now())
        await returns(uow).save(ret)
        await _record(ret.order_id, ret.events, ret.notes, uow)
        await uow.commit()
    return ret


async def _return(return_id: str, uow: OrderUnitOfWork, *, for_update: bool = False) -> Return:
    ret = await returns(uow).get(return_id, for_update=for_update)
    if ret is None:
        raise ReturnNotFound(return_id)
    return ret


async def reject_return(return_id: str, note: str | None, uow: OrderUnitOfWork) -> Return:
    async with uow:
        ret = await _return(return_id, uow, for_update=True)
        ret.reject(note, _now())
        await returns(uow).save(ret)
        await _record(ret.order_id, ret.events, ret.notes, uow)
        await uow.commit()
    return ret


async def receive_return(return_id: str, note: str | None, uow: OrderUnitOfWork) -> Return:
    async with uow:
        ret = await _return(return_id, uow, for_update=True)
        ret.receive(note, _now())
        await returns(uow).save(ret)
        await _record(ret.order_id, ret.events, ret.notes, uow)
        await uow.commit()
    return ret


# -- refunds ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RefundIdempotency:
    """An `Idempotency-Key` claim for a refund; the first result is stored with it."""

    scope: str
    key: str
    request_hash: str
    snapshot: Callable[[Refund], dict[str, Any]]


@dataclass(frozen=True)
class Issued:
    refund: Refund


@dataclass(frozen=True)
class Replayed:
    snapshot: dict[str, Any]


async def refund_order(
    order_id: str,
    ask: RefundAsk,
    uow: OrderUnitOfWork,
    *,
    idempotency: RefundIdempotency | None = None,
) -> Issued | Replayed:
    """Issue a refund once: the order row is locked, so refunds of one order never race.

    Same key and body: `Replayed` (the first answer). Same key, other body:
    `IdempotencyConflict`. Otherwise the domain decides (`issue_refund`), and the refund,
    the return it closes, the key and `refund-issued` commit together.
    """
    async with uow:
        order = await _order(order_id, uow, for_update=True)
        if idempotency is not None:
            earlier_use = await refunds(uow).earlier_key(idempotency.scope, idempotency.key)
            if earlier_use is not None:
                return _replay(earlier_use, idempotency)
        ret = None
        if ask.return_id is not None:
            ret = await returns(uow).get(ask.return_id, for_update=True)
            if ret is None or ret.order_id != order_id:
                raise ReturnNotFound(ask.return_id)
        now = _now()
        refund = issue_refund(order, await refunds(uow).of_order(order_id), ask, ret, now)
        if idempotency is not None:
            claimed = await uow.idempotency.claim(
                idempotency.scope,
                idempotency.key,
                idempotency.request_hash,
                idempotency.snapshot(refund),
            )
            if claimed is not None:  # a twin on another order took the key meanwhile
                return _replay((claimed.request_hash, claimed.result), idempotency)
        await refunds(uow).add(refund)
        if ret is not None:
            ret.refunded(refund.id, now)
            await returns(uow).save(ret)
            await _record(order_id, ret.events, ret.notes, uow)
        await _record(order_id, [refund.event()], [], uow)
        await uow.commit()
    return Issued(refund)


def _replay(earlier: tuple[str, Any], idempotency: RefundIdempotency) -> Replayed:
    request_hash, result = earlier
    if request_hash != idempotency.request_hash or not isinstance(result, dict):
        raise IdempotencyConflict()
    return Replayed(result)


async def list_refunds(order_id: str, uow: OrderUnitOfWork) -> list[Refund]:
    async with uow:
        await _order(order_id, uow)
        return await refunds(uow).of_order(order_id)


# -- complaints ------------------------------------------------------------------------
async def file_complaint(
    order_id: str,
    tier: ComplaintTier,
    summary: str,
    targets: ComplaintTargets,
    uow: OrderUnitOfWork,
) -> Complaint:
    async with uow:
        await _order(order_id, uow)
        complaint = Complaint.file(order_id, tier, summary, targets, _now())
        await complaints(uow).add(complaint)
        await _record(order_id, complaint.events, complaint.notes, uow)
        await uow.commit()
    return complaint


async def _complaint(complaint_id: str, uow: OrderUnitOfWork, *, for_update: bool) -> Complaint:
    complaint = await complaints(uow).get(complaint_id, for_update=for_update)
    if complaint is None:
        raise ComplaintNotFound(complaint_id)
    return complaint


async def respond_to_complaint(
    complaint_id: str, by: str, message: str, uow: OrderUnitOfWork
) -> Complaint:
    """Record a response (`complaint-responded` for the first); `ComplaintClosed` once resolved."""
    async with uow:
        complaint = await _complaint(complaint_id, uow, for_update=True)
        complaint.respond(by, message, _now())
        await complaints(uow).save(complaint)
        await _record(complaint.order_id, complaint.events, complaint.notes, uow)
        await uow.commit()
    return complaint


async def resolve_complaint(
    complaint_id: str, by: str, resolution: str, uow: OrderUnitOfWork
) -> Complaint:
    async with uow:
        complaint = await _complaint(complaint_id, uow, for_update=True)
        complaint.resolve(by, resolution, _now())
        await complaints(uow).save(complaint)
        await _record(complaint.order_id, complaint.events, complaint.notes, uow)
        await uow.commit()
    return complaint


async def get_complaint(complaint_id: str, uow: OrderUnitOfWork) -> Complaint:
    async with uow:
        return await _complaint(complaint_id, uow, for_update=False)


async def list_complaints(
    open_only: bool | None,
    order_id: str | None,
    limit: int,
    cursor: str | None,
    uow: OrderUnitOfWork,
) -> tuple[list[Complaint], str | None]:
    async with uow:
        return await complaints(uow).page(open_only, order_id, limit, cursor)
