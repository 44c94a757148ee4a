"""After-sales KPIs over facts: returns, refunds and complaints; pure, exact, no I/O.

How each figure is bucketed (by event time, never by arrival time):

- shipped orders: the day of an order's first dispatch (per supplier: of its first
  dispatch for that order); returns: the day they were requested, with their status
  now; a rejected return is not a returned order. Return rate = orders with a return
  (not rejected) / orders shipped, both in the bucket;
- refunds: the day they were issued; amounts exact per currency; refund rate = orders
  refunded / orders placed (the `orders` of `GET /v1/kpis` for the same bucket);
- complaints: the day they were filed; response and resolution times are counted for
  the complaints filed in the bucket. A complaint responded to by `respond_by` is within
  target; one responded to later, or still unanswered past it (at `now`), missed it;
  one still open before its target is left out of the share (likewise for resolution).

Grouped by supplier, complaints are null (a complaint names no supplier); returns count
for every supplier that shipped one of their lines (or granted the RMA); refunds for the
supplier charged back (else the one supplier of their lines).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from services.metrics.domain import TOTAL, GroupBy, money, percentile, ratio

TIERS = ("normal", "urgent", "major")
RETURN_STATUSES = ("requested", "authorized", "received", "refunded", "rejected")
COST_BEARERS = ("merchant", "supplier")


class Shipment(NamedTuple):
    """An order's first dispatch by one supplier."""

    order_id: str
    supplier_id: str
    channel: str
    at: datetime


class Return(NamedTuple):
    return_id: str
    order_id: str
    channel: str
    reason: str
    units: int
    requested_at: datetime
    suppliers: frozenset[str]
    steps: frozenset[str]
    """`authorized`, `rejected`, `received`, `refunded`: what has happened to it since."""

    @property
    def status(self) -> str:
        for step in ("rejected", "refunded", "received", "authorized"):
            if step in self.steps:
                return step
        return "requested"


class Refund(NamedTuple):
    refund_id: str
    order_id: str
    channel: str
    currency: str
    amount_micros: int
    reason: str
    cost_bearer: str
    supplier_id: str | None
    issued_at: datetime


class Complaint(NamedTuple):
    complaint_id: str
    order_id: str
    channel: str
    tier: str
    filed_at: datetime
    respond_by: datetime | None
    """None: the filing has not been seen yet (only a later step has)."""
    resolve_by: datetime | None
    responded_at: datetime | None
    resolved_at: datetime | None


@dataclass
class AfterSalesFacts:
    shipments: list[Shipment] = field(default_factory=list)
    returns: list[Return] = field(default_factory=list)
    refunds: list[Refund] = field(default_factory=list)
    complaints: list[Complaint] = field(default_factory=list)


def seconds(later: datetime, earlier: datetime) -> float:
    return round((later - earlier).total_seconds(), 3)


def target_outcome(done_at: datetime | None, due: datetime | None, now: datetime) -> str | None:
    """`within`, `missed`, or None (no target known, or still open before it)."""
    if due is None:
        return None
    if done_at is not None:
        return "within" if done_at <= due else "missed"
    return "missed" if now > due else None


@dataclass
class _Complaints:
    count: int = 0
    open: int = 0
    first_response: list[float] = field(default_factory=list)
    resolution: list[float] = field(default_factory=list)
    response: Counter[str] = field(default_factory=Counter)
    resolved: Counter[str] = field(default_factory=Counter)

    def add(self, c: Complaint, now: datetime) -> None:
        self.count += 1
        self.open += c.resolved_at is None
        if c.responded_at is not None:
            self.first_response.append(seconds(c.responded_at, c.filed_at))
        if c.resolved_at is not None:
            self.resolution.append(seconds(c.resolved_at, c.filed_at))
        for tally, done, due in (
            (self.response, c.responded_at, c.respond_by),
            (self.resolved, c.resolved_at, c.resolve_by),
        ):
            outcome = target_outcome(done, due, now)
            if outcome is not None:
                tally[outcome] += 1

    def render(self) -> dict[str, Any]:
        def pcts(samples: list[float]) -> dict[str, Any]:
            return {
                "p50": percentile(samples, 50),
                "p95": percentile(samples, 95),
                "count": len(samples),
            }

        r, s = self.response, self.resolved
        return {
            "complaints": self.count,
            "open": self.open,
            "first_response_s": pcts(self.first_response),
            "resolution_s": pcts(self.resolution),
            "responded_within_target": r["within"],
            "response_target_missed": r["missed"],
            "response_within_target_rate": ratio(r["within"], r["within"] + r["missed"]),
            "resolved_within_target": s["within"],
            "resolution_target_missed": s["missed"],
            "resolution_within_target_rate": ratio(s["within"], s["within"] + s["missed"]),
        }


@dataclass
class _Bucket:
    orders: int = 0
    shipped: set[str] = field(default_factory=set)
    returns: Counter[str] = field(default_factory=Counter)  # by status
    returned: dict[str, set[str]] = field(default_factory=dict)  # reason -> orders
    returns_by_reason: Counter[str] = field(default_factory=Counter)
    units_by_reason: Counter[str] = field(default_factory=Counter)
    refunds: Counter[str] = field(default_factory=Counter)  # by reason
    refunded: dict[str, set[str]] = field(default_factory=dict)  # reason -> orders
    refund_amount: dict[str, Counter[str]] = field(default_factory=dict)  # reason -> currency
    cost: dict[str, Counter[str]] = field(default_factory=dict)  # bearer -> currency
    complaints: _Complaints = field(default_factory=_Complaints)
    by_tier: dict[str, _Complaints] = field(default_factory=dict)


def _amounts(counters: Iterable[Counter[str]]) -> dict[str, str]:
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    return {cur: money(v, cur) for cur, v in sorted(total.items())}


def _union(sets: Iterable[set[str]]) -> set[str]:
    out: set[str] = set()
    for s in sets:
        out |= s
    return out


class _Tally:
    def __init__(self, group_by: GroupBy | None, start: datetime, end: datetime) -> None:
        self.group_by, self.start, self.end = group_by, start, end
        self.buckets: dict[str, _Bucket] = {}

    def keys(self, at: datetime, channel: str, suppliers: Iterable[str | None]) -> list[str]:
        if not self.start <= at < self.end:
            return []
        if self.group_by is None:
            return [TOTAL]
        if self.group_by is GroupBy.DAY:
            return [at.date().isoformat()]
        if self.group_by is GroupBy.CHANNEL:
            return [channel]
        return sorted({s for s in suppliers if s is not None})

    def __call__(self, key: str) -> _Bucket:
        found = self.buckets.get(key)
        if found is None:
            found = self.buckets[key] = _Bucket()
        return found


def after_sales_kpis(
    facts: AfterSalesFacts,
    group_by: GroupBy | None,
    start: datetime,
    end: datetime,
    now: datetime,
    *,
    orders: Mapping[str, int],
) -> list[dict[str, Any]]:
    """After-sales items for the window [start, end), one per key of `orders` (orders
    placed per key, the refund rate's denominator) or of any fact in the window."""
    tally = _Tally(group_by, start, end)
    for key, n in orders.items():
        tally(key).orders = n
    first: dict[tuple[str, str], Shipment] = {}
    for s in facts.shipments:
        pair = (s.order_id, s.supplier_id if group_by is GroupBy.SUPPLIER else "")
        if pair not in first or (s.at, s.supplier_id, s.channel) < (
            first[pair].at,
            first[pair].supplier_id,
            first[pair].channel,
        ):  # ties broken by value, so the order facts come in never matters
            first[pair] = s
    for s in first.values():
        for k in tally.keys(s.at, s.channel, [s.supplier_id]):
            tally(k).shipped.add(s.order_id)
    for r in facts.returns:
        for k in tally.keys(r.requested_at, r.channel, r.suppliers):
            b = tally(k)
            b.returns[r.status] += 1
            if r.status != "rejected":
                b.returned.setdefault(r.reason, set()).add(r.order_id)
                b.returns_by_reason[r.reason] += 1
                b.units_by_reason[r.reason] += r.units
    for f in facts.refunds:
        for k in tally.keys(f.issued_at, f.channel, [f.supplier_id]):
            b = tally(k)
            b.refunds[f.reason] += 1
            b.refunded.setdefault(f.reason, set()).add(f.order_id)
            b.refund_amount.setdefault(f.reason, Counter())[f.currency] += f.amount_micros
            b.cost.setdefault(f.cost_bearer, Counter())[f.currency] += f.amount_micros
    if group_by is not GroupBy.SUPPLIER:
        for c in facts.complaints:
            for k in tally.keys(c.filed_at, c.channel, ()):
                b = tally(k)
                b.complaints.add(c, now)
                b.by_tier.setdefault(c.tier, _Complaints()).add(c, now)
    per_supplier = group_by is GroupBy.SUPPLIER
    return [_render(k, tally.buckets[k], per_supplier) for k in sorted(tally.buckets)]


def _render(key: str, b: _Bucket, per_supplier: bool) -> dict[str, Any]:
    shipped = len(b.shipped)
    returned = _union(b.returned.values())
    refunded = _union(b.refunded.values())
    return {
        "key": key,
        "shipped_orders": shipped,
        "returns": sum(b.returns.values()),
        "returns_by_status": {s: b.returns[s] for s in RETURN_STATUSES},
        "returned_orders": len(returned),
        "returned_units": sum(b.units_by_reason.values()),
        "return_rate": ratio(len(returned), shipped),
        "returns_by_reason": {
            reason: {
                "returns": n,
                "returned_orders": len(b.returned[reason]),
                "returned_units": b.units_by_reason[reason],
                "return_rate": ratio(len(b.returned[reason]), shipped),
            }
            for reason, n in sorted(b.returns_by_reason.items())
        },
        "orders": b.orders,
        "refunds": sum(b.refunds.values()),
        "refunded_orders": len(refunded),
        "refund_amount": _amounts(b.refund_amount.values()),
        "refund_rate": ratio(len(refunded), b.orders),
        "refunds_by_reason": {
            reason: {
                "refunds": n,
                "refunded_orders": len(b.refunded[reason]),
                "amount": _amounts([b.refund_amount[reason]]),
                "refund_rate": ratio(len(b.refunded[reason]), b.orders),
            }
            for reason, n in sorted(b.refunds.items())
        },
        "refund_cost_by_bearer": {
            bearer: _amounts([b.cost.get(bearer, Counter())]) for bearer in COST_BEARERS
        },
        "complaints": None if per_supplier else b.complaints.render(),
        "complaints_by_tier": None
        if per_supplier
        else {tier: b.by_tier.get(tier, _Complaints()).render() for tier in TIERS},
    }
