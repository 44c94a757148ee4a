"""Returns: what shipped, what may still go back, and a return's lifecycle. No I/O."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from services.order.aftersales.errors import InvalidAfterSales, NothingShipped, ReturnStatusConflict
from services.order.domain import LineStage, Note, Order, OrderLine
from shared.events import (
    EventData,
    ReturnAuthorized,
    ReturnLine,
    ReturnReason,
    ReturnReceived,
    ReturnRejected,
    ReturnRequested,
)


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
