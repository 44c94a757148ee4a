"""After-sales domain: returns, refunds and complaints of an order, and their rules. No I/O.

Returns. A return covers lines that SHIPPED (a `shipment-dispatched` carried them), at most
the line's quantity less what earlier returns that were not rejected already cover, all
from one supplier (the one that shipped them: one RMA, one address). Its status moves

    requested ──authorize──> authorized ──receive──> received ──refund──> refunded
        └──────reject───────────┴──> rejected          (authorized ──refund──> refunded too)

and any other move is a `ReturnStatusConflict` naming the current status.

Refunds. Never more than what the customer paid (`paid`: each line's price times its
quantity; the order records no discounts or shipping) across every refund of the order; a
line's refunded quantity never exceeds its quantity. The cost falls on the supplier who
shipped the goods when the reason is a supplier fault (`SUPPLIER_FAULTS`) and something
shipped, on the merchant otherwise (a refund of a cancelled, never-shipped order included).

Complaints. Filed with a tier; respond by the tier's target, resolve within the resolution
target. The first response is an event, later ones are only recorded; resolving an
unanswered complaint is its first response too. Summary, messages and resolutions never
leave the order service in an event.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from services.order.aftersales.errors import (
    ComplaintClosed,
    InvalidAfterSales,
    NothingShipped,
    RefundExceedsPaid,
    ReturnStatusConflict,
)
from services.order.domain import LineStage, Note, Order, OrderLine
from shared.events import (
    SUPPLIER_FAULTS,
    ComplaintFiled,
    ComplaintResolved,
    ComplaintResponded,
    ComplaintTier,
    CostBearer,
    EventData,
    RefundIssued,
    RefundLine,
    ReturnAuthorized,
    ReturnLine,
    ReturnReason,
    ReturnReceived,
    ReturnRejected,
    ReturnRequested,
)
from shared.money import format_amount, minor_units


@dataclass(frozen=True)
class ItemQty:
    """A line of the order and how many of it (a return's or a refund's request)."""

    line_id: str
    quantity: int


# -- what shipped ----------------------------------------------------------------------
def shipped_lines(order: Order) -> dict[str, tuple[OrderLine, str | None]]:
    """Each line a shipment carried, with the supplier that shipped it."""
    by_id = {ln.line_id: ln for ln in order.lines}
    found: dict[str, tuple[OrderLine, str | None]] = {}
    for shipment in order.shipments:
        for line_id in shipment.line_ids:
            if line_id in by_id:
                found[line_id] = (by_id[line_id], shipment.supplier_id)
    for ln in order.lines:  # shipped by stage but no shipment on record: trust the line
        if ln.line_id not in found and ln.stage >= LineStage.SHIPPED:
            found[ln.line_id] = (ln, ln.supplier_id)
    return found


def paid(order: Order) -> Decimal:
    """What the customer paid: each line's price times its quantity."""
    return order.total


# -- returns ---------------------------------------------------------------------------
class ReturnStatus(StrEnum):
    REQUESTED = "requested"
    AUTHORIZED = "authorized"
    REJECTED = "rejected"
    RECEIVED = "received"
    REFUNDED = "refunded"


SOURCES: dict[str, frozenset[ReturnStatus]] = {
    "authorize": frozenset({ReturnStatus.REQUESTED}),
    "reject": frozenset({ReturnStatus.REQUESTED, ReturnStatus.AUTHORIZED}),
    "receive": frozenset({ReturnStatus.AUTHORIZED}),
    "refund": frozenset({ReturnStatus.AUTHORIZED, ReturnStatus.RECEIVED}),
}
"""Which statuses each move may start from."""


@dataclass(frozen=True)
class ReturnedLine:
    line_id: str
    sku: str
    quantity: int


def returnable(order: Order, earlier: Sequence[Return]) -> dict[str, int]:
    """How many of each shipped line may still be returned."""
    covered: Counter[str] = Counter()
    for ret in earlier:
        if ret.status is not ReturnStatus.REJECTED:
            for line in ret.lines:
                covered[line.line_id] += line.quantity
    return {lid: ln.quantity - covered[lid] for lid, (ln, _) in shipped_lines(order).items()}


@dataclass
class Return:
    id: str
    order_id: str
    supplier_id: str | None
    reason: ReturnReason
    lines: list[ReturnedLine]
    status: ReturnStatus
    created_at: datetime
    updated_at: datetime
    note: str | None = None
    rma: str | None = None
    return_address: str | None = None
    authorized_at: datetime | None = None
    rejected_at: datetime | None = None
    received_at: datetime | None = None
    refunded_at: datetime | None = None
    refund_id: str | None = None
    events: list[EventData] = field(default_factory=list, repr=False)
    notes: list[Note] = field(default_factory=list, repr=False)

    @classmethod
    def request(
        cls,
        order: Order,
        earlier: Sequence[Return],
        reason: ReturnReason,
        wanted: Sequence[ItemQty],
        note: str | None,
        now: datetime,
    ) -> Return:
        """A new `requested` return; `NothingShipped` (409) or `InvalidAfterSales` (422)."""
        shipped = shipped_lines(order)
        if not shipped:
            raise NothingShipped(order.id, order.status.value)
        left = returnable(order, earlier)
        problems: list[tuple[str, str]] = []
        suppliers: dict[str, list[str]] = {}
        seen: set[str] = set()
        for i, item in enumerate(wanted):
            if item.line_id in seen:
                problems.append((f"lines.{i}.line_id", "appears twice; send one entry per line"))
                continue
            seen.add(item.line_id)
            if item.line_id not in {ln.line_id for ln in order.lines}:
                problems.append((f"lines.{i}.line_id", f"not a line of order {order.id}"))
            elif item.line_id not in shipped:
                problems.append((f"lines.{i}.line_id", "has not shipped: nothing to return"))
            elif item.quantity > left[item.line_id]:
                line = shipped[item.line_id][0]
                problems.append(
                    (
                        f"lines.{i}.quantity",
                        f"at most {left[item.line_id]} returnable "
                        f"({line.quantity} shipped, {line.quantity - left[item.line_id]} "
                        "in earlier returns)",
                    )
                )
            else:
                supplier = shipped[item.line_id][1] or "unknown"
                suppliers.setdefault(supplier, []).append(item.line_id)
        if problems:
            raise InvalidAfterSales(problems)
        if len(suppliers) > 1:
            named = ", ".join(f"{s} ({', '.join(ids)})" for s, ids in sorted(suppliers.items()))
            raise InvalidAfterSales(
                [("lines", f"lines come from different suppliers: {named}")],
                f"the lines were shipped by different suppliers ({named}): "
                "file one return per supplier",
            )
        [supplier] = suppliers
        ret = cls(
            id=f"ret_{uuid.uuid4().hex}",
            order_id=order.id,
            supplier_id=None if supplier == "unknown" else supplier,
            reason=reason,
            lines=[
                ReturnedLine(item.line_id, shipped[item.line_id][0].sku, item.quantity)
                for item in wanted
            ],
            status=ReturnStatus.REQUESTED,
            created_at=now,
            updated_at=now,
            note=note,
        )
        ret.events.append(
            ReturnRequested(
                order_id=order.id,
                return_id=ret.id,
                reason=reason,
                lines=ret._event_lines(),
                requested_at=now,
            )
        )
        return ret

    def _event_lines(self) -> list[ReturnLine]:
        return [
            ReturnLine(
                line_id=ln.line_id, sku=ln.sku, quantity=ln.quantity, supplier_id=self.supplier_id
            )
            for ln in self.lines
        ]

    def _move(self, action: str, to: ReturnStatus, now: datetime) -> None:
        self.check(action)
        self.status = to
        self.updated_at = now

    def check(self, action: str) -> None:
        """`ReturnStatusConflict` unless the return may make this move now."""
        if self.status not in SOURCES[action]:
            raise ReturnStatusConflict(self.id, self.status.value, action)

    def authorize(self, rma: str, return_address: str, note: str | None, now: datetime) -> None:
        """The supplier granted an RMA: the customer may send the goods to its address."""
        self._move("authorize", ReturnStatus.AUTHORIZED, now)
        self.rma, self.return_address, self.authorized_at = rma, return_address, now
        self.note = note or self.note
        self.events.append(
            ReturnAuthorized(
                order_id=self.order_id,
                return_id=self.id,
                supplier_id=self.supplier_id or "unknown",
                reason=self.reason,
                lines=self._event_lines(),
                rma=rma,
                return_address=return_address,
                authorized_at=now,
            )
        )

    def reject(self, note: str | None, now: datetime) -> None:
        """Refused (by ops, or the supplier refused the RMA); `note` tells the customer why."""
        self._move("reject", ReturnStatus.REJECTED, now)
        self.rejected_at = now
        self.note = note or self.note
        self.events.append(
            ReturnRejected(
                order_id=self.order_id, return_id=self.id, note=(note or "")[:1000], rejected_at=now
            )
        )

    def receive(self, note: str | None, now: datetime) -> None:
        self._move("receive", ReturnStatus.RECEIVED, now)
        self.received_at = now
        self.note = note or self.note
        self.events.append(
            ReturnReceived(order_id=self.order_id, return_id=self.id, received_at=now)
        )

    def refunded(self, refund_id: str, now: datetime) -> None:
        """The refund that closes the return (its `refund-issued` is the event)."""
        self._move("refund", ReturnStatus.REFUNDED, now)
        self.refunded_at, self.refund_id = now, refund_id
        self.notes.append(
            Note("return-refunded", {"return_id": self.id, "refund_id": refund_id}, now)
        )


# -- refunds ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RefundAsk:
    """What a refund request asks for: an amount, lines, or both; a reason or a return."""

    amount: Decimal | None
    lines: tuple[ItemQty, ...]
    reason: ReturnReason | None
    return_id: str | None = None


@dataclass(frozen=True)
class Refund:
    id: str
    order_id: str
    return_id: str | None
    amount: Decimal
    currency: str
    reason: ReturnReason
    lines: tuple[RefundLine, ...]
    cost_bearer: CostBearer
    supplier_id: str | None
    channel: str
    issued_at: datetime

    def event(self) -> RefundIssued:
        return RefundIssued(
            order_id=self.order_id,
            refund_id=self.id,
            return_id=self.return_id,
            amount=self.amount,
            currency=self.currency,
            reason=self.reason,
            lines=list(self.lines),
            cost_bearer=self.cost_bearer,
            supplier_id=self.supplier_id,
            channel=self.channel,
            issued_at=self.issued_at,
        )


def refunded_total(refunds: Sequence[Refund]) -> Decimal:
    return sum((r.amount for r in refunds), Decimal(0))


def remaining(order: Order, refunds: Sequence[Refund]) -> Decimal:
    """What may still be refunded of what the customer paid."""
    return paid(order) - refunded_total(refunds)


def issue_refund(
    order: Order,
    earlier: Sequence[Refund],
    ask: RefundAsk,
    ret: Return | None,
    now: datetime,
) -> Refund:
    """The refund `ask` comes to, or why not: `InvalidAfterSales` (a field, 422),
    `ReturnStatusConflict` (the return is not authorized or received), `RefundExceedsPaid`."""
    cur = order.currency
    problems: list[tuple[str, str]] = []
    reason = ask.reason or (ret.reason if ret else None)
    if reason is None:
        problems.append(("reason", "required unless return_id is given"))
    if ret is not None:
        ret.check("refund")
    items = ask.lines or (
        tuple(ItemQty(ln.line_id, ln.quantity) for ln in ret.lines) if ret else ()
    )
    lines_value, problems = _check_lines(order, earlier, items, ret, problems)
    amount = ask.amount if ask.amount is not None else lines_value
    if problems:
        pass  # the lines' value is unknown: the amount is judged once they are right
    elif ask.amount is None and not items:
        problems.append(("amount", "required unless lines (or a return) are given"))
    elif amount <= 0:
        problems.append(("amount", "must be more than 0"))
    else:
        exponent = amount.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > minor_units(cur):
            problems.append(("amount", f"{cur} amounts have at most {minor_units(cur)} decimals"))
        elif items and amount > lines_value:
            problems.append(
                ("amount", f"at most {format_amount(lines_value, cur)} for the lines refunded")
            )
    if problems:
        raise InvalidAfterSales(problems)
    left = remaining(order, earlier)
    if amount > left:
        raise RefundExceedsPaid(
            format_amount(amount, cur),
            format_amount(left, cur),
            format_amount(paid(order), cur),
            cur,
        )
    assert reason is not None
    bearer, supplier = _cost(order, reason, items, ret)
    shipped = shipped_lines(order)
    by_id = {ln.line_id: ln for ln in order.lines}
    return Refund(
        id=f"rfd_{uuid.uuid4().hex}",
        order_id=order.id,
        return_id=ret.id if ret else None,
        amount=amount,
        currency=cur,
        reason=reason,
        lines=tuple(
            RefundLine(
                line_id=i.line_id,
                quantity=i.quantity,
                supplier_id=shipped[i.line_id][1]
                if i.line_id in shipped
                else by_id[i.line_id].supplier_id,
            )
            for i in items
        ),
        cost_bearer=bearer,
        supplier_id=supplier,
        channel=order.channel,
        issued_at=now,
    )


def _check_lines(
    order: Order,
    earlier: Sequence[Refund],
    items: Sequence[ItemQty],
    ret: Return | None,
    problems: list[tuple[str, str]],
) -> tuple[Decimal, list[tuple[str, str]]]:
    """The lines' value at their price; each line's quantity within what is left of it."""
    by_id = {ln.line_id: ln for ln in order.lines}
    done: Counter[str] = Counter()
    for earlier_refund in earlier:
        for refunded in earlier_refund.lines:
            done[refunded.line_id] += refunded.quantity
    in_return = {ln.line_id: ln.quantity for ln in ret.lines} if ret else None
    value, seen = Decimal(0), set[str]()
    for i, item in enumerate(items):
        line = by_id.get(item.line_id)
        if item.line_id in seen:
            problems.append((f"lines.{i}.line_id", "appears twice; send one entry per line"))
        elif line is None:
            problems.append((f"lines.{i}.line_id", f"not a line of order {order.id}"))
        elif in_return is not None and item.quantity > in_return.get(item.line_id, 0):
            problems.append(
                (f"lines.{i}.quantity", f"at most {in_return.get(item.line_id, 0)} in the return")
            )
        elif item.quantity > line.quantity - done[item.line_id]:
            problems.append(
                (
                    f"lines.{i}.quantity",
                    f"at most {line.quantity - done[item.line_id]} left to refund "
                    f"({line.quantity} ordered, {done[item.line_id]} refunded)",
                )
            )
        else:
            value += line.unit_price * item.quantity
        seen.add(item.line_id)
    return value, problems


def _cost(
    order: Order, reason: ReturnReason, items: Sequence[ItemQty], ret: Return | None
) -> tuple[CostBearer, str | None]:
    """Who bears the refund: the supplier that shipped the goods, for a supplier fault."""
    if reason not in SUPPLIER_FAULTS:
        return CostBearer.MERCHANT, None
    if ret is not None and ret.supplier_id:
        return CostBearer.SUPPLIER, ret.supplier_id
    shipped = shipped_lines(order)
    wanted = [i.line_id for i in items] or list(shipped)
    suppliers = sorted({s for lid in wanted if lid in shipped and (s := shipped[lid][1])})
    if not suppliers:
        return CostBearer.MERCHANT, None  # nothing shipped: no supplier to charge back
    if len(suppliers) > 1:
        raise InvalidAfterSales(
            [("lines", f"shipped by suppliers {', '.join(suppliers)}: name lines of one")],
            f"the supplier bears a {reason.value} refund, and these goods were shipped by "
            f"{', '.join(suppliers)}: refund the lines of one supplier at a time",
        )
    return CostBearer.SUPPLIER, suppliers[0]


# -- complaints ------------------------------------------------------------------------
@dataclass(frozen=True)
class ComplaintTargets:
    """Respond within the tier's target; resolve within `resolution`."""

    response: Mapping[ComplaintTier, timedelta]
    resolution: timedelta

    @classmethod
    def default(cls) -> ComplaintTargets:
        return cls(
            {
                ComplaintTier.NORMAL: timedelta(hours=24),
                ComplaintTier.URGENT: timedelta(hours=4),
                ComplaintTier.MAJOR: timedelta(hours=1),
            },
            timedelta(hours=48),
        )


@dataclass(frozen=True)
class ComplaintResponse:
    by: str
    message: str
    at: datetime


@dataclass
class Complaint:
    id: str
    order_id: str
    tier: ComplaintTier
    summary: str
    filed_at: datetime
    respond_by: datetime
    resolve_by: datetime
    responses: list[ComplaintResponse] = field(default_factory=list)
    resolved_at: datetime | None = None
    resolved_by: str | None = None
    resolution: str | None = None
    events: list[EventData] = field(default_factory=list, repr=False)
    notes: list[Note] = field(default_factory=list, repr=False)

    @property
    def status(self) -> str:
        if self.resolved_at is not None:
            return "resolved"
        return "responded" if self.responses else "open"

    @property
    def responded_at(self) -> datetime | None:
        return self.responses[0].at if self.responses else None

    @property
    def responded_by(self) -> str | None:
        return self.responses[0].by if self.responses else None

    @classmethod
    def file(
        cls,
        order_id: str,
        tier: ComplaintTier,
        summary: str,
        targets: ComplaintTargets,
        now: datetime,
    ) -> Complaint:
        complaint = cls(
            id=f"cmp_{uuid.uuid4().hex}",
            order_id=order_id,
            tier=tier,
            summary=summary,
            filed_at=now,
            respond_by=now + targets.response[tier],
            resolve_by=now + targets.resolution,
        )
        complaint.events.append(
            ComplaintFiled(
                order_id=order_id,
                complaint_id=complaint.id,
                tier=tier,
                respond_by=complaint.respond_by,
                resolve_by=complaint.resolve_by,
                filed_at=now,
            )
        )
        return complaint

    def respond(self, by: str, message: str, now: datetime) -> bool:
        """Record a response; True for the first (`complaint-responded`). Closed: 409."""
        if self.resolved_at is not None:
            raise ComplaintClosed(self.id)
        first = not self.responses
        self.responses.append(ComplaintResponse(by, message, now))
        if first:
            self.events.append(
                ComplaintResponded(
                    order_id=self.order_id,
                    complaint_id=self.id,
                    tier=self.tier,
                    by=by,
                    filed_at=self.filed_at,
                    responded_at=now,
                )
            )
        else:
            self.notes.append(
                Note("complaint-response-recorded", {"complaint_id": self.id, "by": by}, now)
            )
        return first

    def resolve(self, by: str, resolution: str, now: datetime) -> None:
        """Resolve once (`ComplaintClosed` after); an unanswered one is answered by it too."""
        if self.resolved_at is not None:
            raise ComplaintClosed(self.id)
        if not self.responses:
            self.respond(by, resolution, now)
        self.resolved_at, self.resolved_by, self.resolution = now, by, resolution
        self.events.append(
            ComplaintResolved(
                order_id=self.order_id,
                complaint_id=self.id,
                tier=self.tier,
                by=by,
                filed_at=self.filed_at,
                resolved_at=now,
            )
        )
