"""After-sales against a supplier: quality-defect returns and chargebacks. No I/O.

**Defect rate, per order.** A return authorised for reason in `QUALITY_DEFECTS` (damaged in
transit, not as described) marks the order *defective* for the supplier that shipped the
returned lines. The defect rate is

    defective orders / shipped supplier orders

both counted per (order, supplier): one order with three broken mugs is one defective
order, as it is one shipment. Per order rather than per unit so a single large order does
not swamp the rate, and so numerator and denominator count the same thing (the `shipped`
counter counts supplier orders). Units are kept and shown beside it. Routing uses the rate
smoothed like the other rates (`routing_policy.Track.quality_rate`).

**Chargebacks.** A refund whose cost the supplier bears (`cost_bearer=supplier`) is charged
back to it: one record per refund id, in the refund's currency, exact.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from services.supplier.domain.routing_policy import Track
from shared.events import QUALITY_DEFECTS, CostBearer, RefundIssued, ReturnAuthorized


@dataclass(frozen=True)
class SupplierReturn:
    """The part of one authorised return that one supplier shipped."""

    return_id: str
    supplier_id: str
    order_id: str
    reason: str
    units: int
    defect: bool
    authorized_at: datetime


def returns_of(data: ReturnAuthorized) -> list[SupplierReturn]:
    """Split a return by the supplier of each line (the RMA's supplier when a line names none)."""
    units: Counter[str] = Counter()
    for line in data.lines:
        units[line.supplier_id or data.supplier_id] += line.quantity
    return [
        SupplierReturn(
            return_id=data.return_id,
            supplier_id=supplier_id,
            order_id=data.order_id,
            reason=data.reason.value,
            units=count,
            defect=data.reason in QUALITY_DEFECTS,
            authorized_at=data.authorized_at,
        )
        for supplier_id, count in sorted(units.items())
    ]


@dataclass(frozen=True)
class Chargeback:
    refund_id: str
    supplier_id: str
    order_id: str
    return_id: str | None
    amount: Decimal
    currency: str
    reason: str
    issued_at: datetime


def chargeback_of(data: RefundIssued) -> Chargeback | None:
    """The chargeback a refund makes, or None when the merchant bears it (or no single
    supplier can be named: then there is nobody to charge)."""
    if data.cost_bearer is not CostBearer.SUPPLIER:
        return None
    supplier_id = data.supplier_id
    if supplier_id is None:
        named = {line.supplier_id for line in data.lines if line.supplier_id}
        if len(named) != 1:
            return None
        supplier_id = named.pop()
    return Chargeback(
        refund_id=data.refund_id,
        supplier_id=supplier_id,
        order_id=data.order_id,
        return_id=data.return_id,
        amount=data.amount,
        currency=data.currency,
        reason=data.reason.value,
        issued_at=data.issued_at,
    )


@dataclass(frozen=True)
class QualityTally:
    """A supplier's returns as counted from `return-authorized` (each return once)."""

    returns: int = 0
    returned_units: int = 0
    defective_orders: int = 0
    defective_units: int = 0


@dataclass(frozen=True)
class ChargebackTally:
    count: int = 0
    totals: dict[str, Decimal] = field(default_factory=dict)
    """Per currency, exact; never converted."""


@dataclass(frozen=True)
class QualityScore:
    """The scorecard's quality section."""

    returns: int
    returned_units: int
    defective_orders: int
    defective_units: int
    defect_rate: float | None
    """Defective orders / shipped supplier orders; None before anything shipped."""
    quality_score: float
    """The smoothed rate routing ranks by (`Track.quality_rate`), 1.0 for a clean record."""

    @classmethod
    def measure(cls, tally: QualityTally, shipped: int) -> QualityScore:
        rate = Track(shipped=shipped, defective=tally.defective_orders).quality_rate
        return cls(
            returns=tally.returns,
            returned_units=tally.returned_units,
            defective_orders=tally.defective_orders,
            defective_units=tally.defective_units,
            defect_rate=round(tally.defective_orders / shipped, 4) if shipped else None,
            quality_score=round(rate, 4),
        )
