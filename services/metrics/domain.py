"""KPI arithmetic over facts: pure functions, no I/O, exact money and exact percentiles.

How each KPI is bucketed (by event time, never by arrival time):

- orders, GMV, AOV, gross margin: the day the order was placed (`placed_at`);
  gross margin is sale price minus supplier cost over the confirmed lines (for each
  line the latest confirmation counts), in the sale's currency;
- confirmation rate and latency: the day of the first supplier confirmation (latency
  is confirmation time minus `placed_at`, one sample per supplier order); the rate is
  orders confirmed / (orders confirmed + orders whose routing failed that day);
- on-time ship rate and delay rates: the day a supplier order was due (`ship_by`);
  on time = dispatched by `ship_by`, late = dispatched after it or reported
  `no_tracking_by_deadline`; supplier orders with neither are still open and left out;
- fulfilment cycle time: the day a shipment was delivered (delivered minus placed);
- cancellations, routing failures, holds, releases, notices: the day of their event.

Grouped by supplier, only supplier-scoped KPIs are defined (sales count the lines the
supplier confirmed); the others are null. Percentiles are nearest-rank on every sample.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from fractions import Fraction
from typing import Any, NamedTuple

from shared.money import minor_units

MICROS = 6
UNKNOWN = "unknown"
"""Channel key of facts whose order-placed event has not (yet) been seen."""


class GroupBy(StrEnum):
    DAY = "day"
    SUPPLIER = "supplier"
    CHANNEL = "channel"


class Sale(NamedTuple):
    order_id: str
    channel: str
    currency: str
    total_micros: int
    placed_at: datetime


class ConfirmedLine(NamedTuple):
    order_id: str
    line_id: str
    supplier_id: str
    currency: str
    quantity: int
    unit_cost_micros: int
    unit_price_micros: int
    """The sale price of the line (from its order-placed event)."""
    confirmed_at: datetime
    event_id: str


class SupplierOrder(NamedTuple):
    """What one supplier was asked to ship for one order, and how it went."""

    order_id: str
    supplier_id: str
    confirmed_at: datetime
    ship_by: datetime
    dispatched_at: datetime | None
    delay_reasons: frozenset[str]
    placed_at: datetime | None
    channel: str


class Delivery(NamedTuple):
    order_id: str
    tracking_number: str
    supplier_id: str | None
    delivered_at: datetime
    placed_at: datetime | None
    channel: str


class Occurrence(NamedTuple):
    """A cancellation, routing failure or notice: something that happened to an order."""

    order_id: str
    channel: str
    at: datetime
    reason: str = ""
    kind: str = ""
    notice_channel: str = ""
    status: str = ""


@dataclass
class Facts:
    """The facts a window's KPIs are computed from (the store loads them)."""

    sales: list[Sale] = field(default_factory=list)
    confirmed_lines: list[ConfirmedLine] = field(default_factory=list)
    supplier_orders: list[SupplierOrder] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)
    cancellations: list[Occurrence] = field(default_factory=list)
    routing_failures: list[Occurrence] = field(default_factory=list)
    holds: list[Occurrence] = field(default_factory=list)
    releases: list[Occurrence] = field(default_factory=list)
    notices: list[Occurrence] = field(default_factory=list)


def percentile(samples: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest sample with at least q% of samples <= it."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = max(1, math.ceil(Fraction(str(q)) * len(ordered) / 100))  # exact, no float rounding
    return ordered[rank - 1]


def money(amount_micros: int, currency: str) -> str:
    """Exact decimal string, with at least the currency's minor units ("12.50")."""
    value = Decimal(amount_micros).scaleb(-MICROS)
    places = minor_units(currency)
    exponent = value.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        return format(value.normalize(), "f")
    return format(value.quantize(Decimal(1).scaleb(-places)), "f")


def mean_money(total_micros: int, count: int, currency: str) -> str:
    """An average amount rounded half-even to the currency's minor units."""
    value = Decimal(total_micros).scaleb(-MICROS) / count
    return format(value.quantize(Decimal(1).scaleb(-minor_units(currency)), ROUND_HALF_EVEN), "f")


def ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None


@dataclass
class _Bucket:
    orders: set[str] = field(default_factory=set)
    gmv: Counter[str] = field(default_factory=Counter)
    orders_by_currency: Counter[str] = field(default_factory=Counter)
    margin: Counter[str] = field(default_factory=Counter)
    confirmed_orders: set[str] = field(default_factory=set)
    failed_orders: set[str] = field(default_factory=set)
    latency: list[float] = field(default_factory=list)
    due: int = 0
    on_time: int = 0
    late: int = 0
    delayed: int = 0
    delayed_by_reason: Counter[str] = field(default_factory=Counter)
    cycle: list[float] = field(default_factory=list)
    deliveries: int = 0
    cancellations: Counter[str] = field(default_factory=Counter)
    routing_failures: Counter[str] = field(default_factory=Counter)
    holds: Counter[str] = field(default_factory=Counter)
    releases: int = 0
    notices: Counter[tuple[str, str, str]] = field(default_factory=Counter)


def _day(moment: datetime) -> str:
    return moment.date().isoformat()


def _seconds(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 3)


def days_between(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


TOTAL = "all"
"""Key of the single item when nothing is grouped (`group_by=None`): the window's totals."""


def kpis(
    facts: Facts,
    group_by: GroupBy | None,
    start: datetime,
    end: datetime,
    *,
    keys: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """KPI items for the window [start, end), one per key; `keys` are always present."""
    tally = _Tally(group_by, start, end, keys)
    tally.sales(facts)
    tally.supplier_orders(facts.supplier_orders)
    if group_by is not GroupBy.SUPPLIER:
        tally.occurrences(facts)
    tally.deliveries(facts.deliveries)
    return tally.items()


class _Tally:
    """Adds facts to the bucket of their key (day, supplier, channel or the total)."""

    def __init__(
        self, group_by: GroupBy | None, start: datetime, end: datetime, keys: Iterable[str]
    ) -> None:
        self.group_by = group_by
        self.start, self.end = start, end
        self.buckets: dict[str, _Bucket] = {k: _Bucket() for k in keys}

    def inside(self, moment: datetime | None) -> bool:
        return moment is not None and self.start <= moment < self.end

    def bucket(self, moment: datetime, channel: str, supplier_id: str | None) -> _Bucket | None:
        """The bucket of a fact that happened at `moment` (inside the window; callers check,
        since asking creates it); None: the fact has no key in this grouping."""
        if self.group_by is None:
            key: str | None = TOTAL
        elif self.group_by is GroupBy.DAY:
            key = _day(moment)
        elif self.group_by is GroupBy.CHANNEL:
            key = channel
        else:
            key = supplier_id
        if key is None:
            return None
        found = self.buckets.get(key)
        if found is None:
            found = self.buckets[key] = _Bucket()
        return found

    def sales(self, facts: Facts) -> None:
        """Orders, GMV and margin, in the bucket of the day the order was placed."""
        sales = {s.order_id: s for s in facts.sales}
        latest: dict[tuple[str, str], ConfirmedLine] = {}
        for cl in facts.confirmed_lines:
            seen = latest.get((cl.order_id, cl.line_id))
            if seen is None or (cl.confirmed_at, cl.event_id) > (seen.confirmed_at, seen.event_id):
                latest[(cl.order_id, cl.line_id)] = cl
        per_supplier = self.group_by is GroupBy.SUPPLIER
        if not per_supplier:
            for placed in facts.sales:
                b = (
                    self.bucket(placed.placed_at, placed.channel, None)
                    if self.inside(placed.placed_at)
                    else None
                )
                if b is not None:
                    b.orders.add(placed.order_id)
                    b.orders_by_currency[placed.currency] += 1
                    b.gmv[placed.currency] += placed.total_micros
        for (order_id, _), cl in latest.items():
            sale = sales.get(order_id)
            if sale is None or not self.inside(sale.placed_at):
                continue
            b = self.bucket(sale.placed_at, sale.channel, cl.supplier_id)
            if b is None:
                continue
            if per_supplier:  # what the supplier was given to ship
                if order_id not in b.orders:
                    b.orders.add(order_id)
                    b.orders_by_currency[sale.currency] += 1
                b.gmv[sale.currency] += cl.quantity * cl.unit_price_micros
            if cl.currency == sale.currency:
                b.margin[sale.currency] += cl.quantity * (
                    cl.unit_price_micros - cl.unit_cost_micros
                )

    def supplier_orders(self, supplier_orders: Sequence[SupplierOrder]) -> None:
        """Latency by confirmation day; on-time and delays by due day; confirmed orders."""
        first: dict[str, SupplierOrder] = {}
        for so in supplier_orders:
            if so.order_id not in first or so.confirmed_at < first[so.order_id].confirmed_at:
                first[so.order_id] = so
            if self.inside(so.confirmed_at) and so.placed_at is not None:
                confirmed = self.bucket(so.confirmed_at, so.channel, so.supplier_id)
                if confirmed is not None:
                    confirmed.latency.append(_seconds(so.confirmed_at, so.placed_at))
            due = (
                self.bucket(so.ship_by, so.channel, so.supplier_id)
                if self.inside(so.ship_by)
                else None
            )
            if due is None:
                continue
            due.due += 1
            if so.dispatched_at is not None and so.dispatched_at <= so.ship_by:
                due.on_time += 1
            elif so.dispatched_at is not None or "no_tracking_by_deadline" in so.delay_reasons:
                due.late += 1
            if so.delay_reasons:
                due.delayed += 1
                due.delayed_by_reason.update(so.delay_reasons)
        if self.group_by is not GroupBy.SUPPLIER:
            for so in first.values():
                b = (
                    self.bucket(so.confirmed_at, so.channel, None)
                    if self.inside(so.confirmed_at)
                    else None
                )
                if b is not None:
                    b.confirmed_orders.add(so.order_id)

    def occurrences(self, facts: Facts) -> None:
        """Routing failures, cancellations and notices, by the day they happened."""
        for rf in facts.routing_failures:
            b = self.bucket(rf.at, rf.channel, None) if self.inside(rf.at) else None
            if b is not None:
                b.failed_orders.add(rf.order_id)
                b.routing_failures[rf.reason] += 1
        for c in facts.cancellations:
            b = self.bucket(c.at, c.channel, None) if self.inside(c.at) else None
            if b is not None:
                b.cancellations[c.reason] += 1
        for h in facts.holds:
            b = self.bucket(h.at, h.channel, None) if self.inside(h.at) else None
            if b is not None:
                b.holds[h.reason] += 1
        for r in facts.releases:
            b = self.bucket(r.at, r.channel, None) if self.inside(r.at) else None
            if b is not None:
                b.releases += 1
        for n in facts.notices:
            b = self.bucket(n.at, n.channel, None) if self.inside(n.at) else None
            if b is not None:
                b.notices[(n.kind, n.notice_channel, n.status)] += 1

    def deliveries(self, deliveries: Sequence[Delivery]) -> None:
        """Cycle time by delivery day; a shipment reported delivered twice counts once."""
        seen: set[tuple[str, str]] = set()
        for d in sorted(deliveries, key=lambda d: d.delivered_at):
            if (d.order_id, d.tracking_number) in seen or not self.inside(d.delivered_at):
                continue
            seen.add((d.order_id, d.tracking_number))
            b = self.bucket(d.delivered_at, d.channel, d.supplier_id)
            if b is not None:
                b.deliveries += 1
                if d.placed_at is not None:
                    b.cycle.append(_seconds(d.delivered_at, d.placed_at))

    def items(self) -> list[dict[str, Any]]:
        per_supplier = self.group_by is GroupBy.SUPPLIER
        return [_render(k, self.buckets[k], per_supplier) for k in sorted(self.buckets)]


def _pcts(samples: list[float]) -> dict[str, Any]:
    return {"p50": percentile(samples, 50), "p95": percentile(samples, 95), "count": len(samples)}


def _render(key: str, b: _Bucket, per_supplier: bool) -> dict[str, Any]:
    decided = len(b.confirmed_orders) + len(b.failed_orders)
    only: Callable[[Any], Any] = (lambda _v: None) if per_supplier else (lambda v: v)
    return {
        "key": key,
        "orders": len(b.orders),
        "gmv": {c: money(v, c) for c, v in sorted(b.gmv.items())},
        "aov": {c: mean_money(v, b.orders_by_currency[c], c) for c, v in sorted(b.gmv.items())},
        "gross_margin": {c: money(v, c) for c, v in sorted(b.margin.items())},
        "confirmed_orders": only(len(b.confirmed_orders)),
        "confirmation_rate": only(ratio(len(b.confirmed_orders), decided)),
        "confirmation_latency_s": _pcts(b.latency),
        "supplier_orders_due": b.due,
        "shipped_on_time": b.on_time,
        "shipped_late": b.late,
        "on_time_rate": ratio(b.on_time, b.on_time + b.late),
        "delayed_supplier_orders": b.delayed,
        "delay_rate": ratio(b.delayed, b.due),
        "delays_by_reason": dict(sorted(b.delayed_by_reason.items())),
        "delay_rate_by_reason": {
            r: ratio(n, b.due) for r, n in sorted(b.delayed_by_reason.items())
        },
        "deliveries": b.deliveries,
        "cycle_time_s": _pcts(b.cycle),
        "cancellations": only(sum(b.cancellations.values())),
        "cancellations_by_reason": only(dict(sorted(b.cancellations.items()))),
        "routing_failures": only(sum(b.routing_failures.values())),
        "routing_failures_by_reason": only(dict(sorted(b.routing_failures.items()))),
        "holds": only(sum(b.holds.values())),
        "holds_by_reason": only(dict(sorted(b.holds.items()))),
        "releases": only(b.releases),
        "notices_sent": only(sum(n for (_, _, s), n in b.notices.items() if s == "sent")),
        "notices": only(
            [
                {"kind": k, "channel": ch, "status": s, "count": n}
                for (k, ch, s), n in sorted(b.notices.items())
            ]
        ),
    }


def ranking(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Suppliers best first: highest on-time rate, then lowest delay rate, then id.

    A supplier with nothing decided yet (no on-time rate) ranks after those with one.
    """

    def order(item: dict[str, Any]) -> tuple[Any, ...]:
        on_time = item["on_time_rate"]
        delay_rate = item["delay_rate"]
        return (
            on_time is None,
            -(on_time or 0.0),
            delay_rate if delay_rate is not None else 2.0,
            item["key"],
        )

    return sorted(items, key=order)
