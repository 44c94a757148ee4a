"""Routing: which supplier ships which order line, by a documented ranking policy. No I/O.

Eligible offers for a line: the supplier is active, has `stock >= quantity`, quotes in
the order's currency (no FX conversion: other currencies are not eligible), costs no
more than the line's unit price (never a negative margin), and has not already failed
this line. They are ranked by a score (lower is better):

    score = w_cost * unit_cost / unit_price            (0..1: share of the price we pay)
          + w_lead * min(lead_time_hours / 168, 1)      (a week or more counts as 1)
          + w_reliability * (1 - reliability)           (measured, see below)
          + w_priority * (priority - 1) / 9             (priority 1 best .. 10 worst)

with default weights cost 0.45, lead 0.2, reliability 0.3, priority 0.05. Reliability is
the supplier's confirmation rate times its on-time ship rate from its own history here,
each smoothed towards 1 with a prior of 5 virtual good orders, so a new supplier is
trusted a little and one that keeps failing sinks; times 5 / (5 + misses), where each
missed deadline (not accepted in time, no tracking by the ship-by date) and lost parcel
counts 1 when new and halves every `MISS_HALF_LIFE` (7 days), so a supplier recovers;
times its quality rate, the share of its shipped orders not returned for a quality defect
(damaged in transit, not as described: see `quality.py`), smoothed the same way, so a
supplier with a high defect rate sinks below an otherwise equal one.
Ties go to the lower supplier id.
Lines routed to the same supplier form one supplier order.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from shared.events import RoutingFailureReason


@dataclass(frozen=True)
class Weights:
    cost: float = 0.45
    lead: float = 0.2
    reliability: float = 0.3
    priority: float = 0.05


MISS_HALF_LIFE = timedelta(days=7)


def decayed(ages: list[timedelta], half_life: timedelta = MISS_HALF_LIFE) -> float:
    """The weight of misses this old: 1 each when new, halving every `half_life`."""
    return float(sum(0.5 ** (max(age, timedelta()) / half_life) for age in ages))


@dataclass(frozen=True)
class Track:
    """A supplier's history: decisions and shipments counted by this service."""

    decided: int = 0
    accepted: int = 0
    shipped: int = 0
    shipped_on_time: int = 0
    penalty: float = 0.0
    """Missed deadlines and lost parcels, each weighing 1 when new and half as much every
    `MISS_HALF_LIFE` after (so a supplier that stops missing recovers)."""
    defective: int = 0
    """Shipped orders returned for a quality defect (see `quality.py`)."""

    PRIOR = 5

    @property
    def confirmation_rate(self) -> float:
        return (self.accepted + self.PRIOR) / (self.decided + self.PRIOR)

    @property
    def on_time_rate(self) -> float:
        return (self.shipped_on_time + self.PRIOR) / (self.shipped + self.PRIOR)

    @property
    def quality_rate(self) -> float:
        """Share of shipped orders not returned as defective, smoothed towards 1."""
        good = max(self.shipped - self.defective, 0)
        return (good + self.PRIOR) / (max(self.shipped, self.defective) + self.PRIOR)

    @property
    def reliability(self) -> float:
        return (
            self.confirmation_rate
            * self.on_time_rate
            * self.quality_rate
            * self.PRIOR
            / (self.PRIOR + self.penalty)
        )


@dataclass(frozen=True)
class SupplierInfo:
    id: str
    active: bool
    priority: int
    track: Track = field(default_factory=Track)


@dataclass(frozen=True)
class Offer:
    supplier_id: str
    sku: str
    supplier_sku: str
    unit_cost: Decimal
    currency: str
    stock: int
    lead_time_hours: float
    external_ids: tuple[str, ...] | None = None
    """Marketplace ids this offer maps (`shopify:variant:<id>`, ...); None: not said."""


@dataclass(frozen=True)
class Line:
    line_id: str
    sku: str
    quantity: int
    unit_price: Decimal
    external_ids: tuple[str, ...] | None = None
    """A marketplace line sent without a SKU, not (yet) mapped to one: the platform ids an
    offer may map (routing replaces the line's SKU with the mapped offer's and drops them)."""


@dataclass(frozen=True)
class RoutingRequest:
    """An order as routing needs it: kept from `order-placed` so lines can be failed over."""

    order_id: str
    currency: str
    lines: list[Line]
    ship_country: str
    ship_postal_code: str
    placed_at: datetime
    received_at: datetime
    cancelled_at: datetime | None = None

    def lines_named(self, line_ids: set[str]) -> list[Line]:
        return [ln for ln in self.lines if ln.line_id in line_ids]


@dataclass(frozen=True)
class Pick:
    line: Line
    offer: Offer


@dataclass
class Plan:
    by_supplier: dict[str, list[Pick]] = field(default_factory=dict)
    failed: dict[str, RoutingFailureReason] = field(default_factory=dict)


def score(offer: Offer, line: Line, supplier: SupplierInfo, w: Weights) -> float:
    price = float(line.unit_price)
    cost_share = float(offer.unit_cost) / price if price > 0 else 1.0
    lead = min(offer.lead_time_hours / 168.0, 1.0)
    priority = (min(max(supplier.priority, 1), 10) - 1) / 9
    return (
        w.cost * cost_share
        + w.lead * lead
        + w.reliability * (1.0 - supplier.track.reliability)
        + w.priority * priority
    )


def rank(
    line: Line,
    offers: list[Offer],
    suppliers: dict[str, SupplierInfo],
    currency: str,
    weights: Weights,
    excluded: frozenset[str] = frozenset(),
) -> tuple[list[Offer], RoutingFailureReason | None]:
    """Eligible offers best first, or the reason there is none."""
    candidates = [
        o
        for o in offers
        if o.sku == line.sku
        and o.supplier_id not in excluded
        and (s := suppliers.get(o.supplier_id)) is not None
        and s.active
        and o.currency == currency
    ]
    if not candidates:
        if line.external_ids is not None:  # no SKU, and no offer maps its platform ids
            return [], RoutingFailureReason.UNMAPPED_SKU
        return [], (
            RoutingFailureReason.ALL_SUPPLIERS_FAILED if excluded else RoutingFailureReason.NO_OFFER
        )
    priced = [o for o in candidates if o.unit_cost <= line.unit_price]
    if not priced:
        return [], RoutingFailureReason.NEGATIVE_MARGIN
    stocked = [o for o in priced if o.stock >= line.quantity]
    if not stocked:
        return [], (
            RoutingFailureReason.ALL_SUPPLIERS_FAILED
            if excluded
            else RoutingFailureReason.OUT_OF_STOCK
        )
    stocked.sort(key=lambda o: (score(o, line, suppliers[o.supplier_id], weights), o.supplier_id))
    return stocked, None


def could_wait(
    line: Line,
    offers: list[Offer],
    suppliers: dict[str, SupplierInfo],
    currency: str,
    excluded: frozenset[str],
    released: Mapping[tuple[str, str], int] | None = None,
) -> bool:
    """Whether some supplier not ruled out for good could still take the line once it is
    reachable again: an offer in the currency at a margin, with stock for the line.

    `released` is stock being given back in the same pass (a failed supplier's
    reservation), not yet in the offers' stock. Without stock no wait can help: the
    line fails now instead of waiting for ever."""
    released = released or {}
    return any(
        o.sku == line.sku
        and o.supplier_id not in excluded
        and (s := suppliers.get(o.supplier_id)) is not None
        and s.active
        and o.currency == currency
        and o.unit_cost <= line.unit_price
        and o.stock + released.get((o.supplier_id, o.sku), 0) >= line.quantity
        for o in offers
    )


def plan(
    lines: list[Line],
    offers: list[Offer],
    suppliers: dict[str, SupplierInfo],
    currency: str,
    weights: Weights,
    excluded: dict[str, frozenset[str]] | None = None,
) -> Plan:
    """Pick the best eligible offer per line, drawing stock down as lines take it."""
    excluded = excluded or {}
    stock = {(o.supplier_id, o.sku): o.stock for o in offers}
    result = Plan()
    grouped: dict[str, list[Pick]] = defaultdict(list)
    for line in lines:
        live = [
            Offer(
                o.supplier_id,
                o.sku,
                o.supplier_sku,
                o.unit_cost,
                o.currency,
                stock[(o.supplier_id, o.sku)],
                o.lead_time_hours,
            )
            for o in offers
        ]
        ranked, reason = rank(
            line, live, suppliers, currency, weights, excluded.get(line.line_id, frozenset())
        )
        if reason is not None:
            result.failed[line.line_id] = reason
            continue
        best = ranked[0]
        stock[(best.supplier_id, best.sku)] -= line.quantity
        grouped[best.supplier_id].append(Pick(line, best))
    result.by_supplier = dict(grouped)
    return result


def plan_in_turn(
    orders: Sequence[tuple[list[Line], str]],
    offers: list[Offer],
    suppliers: dict[str, SupplierInfo],
    weights: Weights,
) -> list[Plan]:
    """Plans for orders (lines, currency) in turn, each seeing the stock the ones before
    it took: the same plans as routing them one by one, in this order."""
    stock = {(o.supplier_id, o.sku): o.stock for o in offers}
    plans = []
    for lines, currency in orders:
        live = [replace(o, stock=stock[(o.supplier_id, o.sku)]) for o in offers]
        result = plan(lines, live, suppliers, currency, weights)
        for supplier_id, picks in result.by_supplier.items():
            for p in picks:
                stock[(supplier_id, p.line.sku)] -= p.line.quantity
        plans.append(result)
    return plans
