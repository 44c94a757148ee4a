"""KPI rollups: what one order's facts add to the day rollups; pure, no I/O.

Every KPI joins facts of one order only (its sale, confirmations, dispatches, delays,
deliveries, cancellations, ...), so an order's whole contribution to the rollups is a
function of its own facts: `contribution(order)`. A batch of events changes the facts of
a few orders, and the rollups change by `after - before` of those orders (`batch_delta`),
whatever order the events came in: a confirmation seen before its sale is counted on
channel `unknown`, and moves to the sale's channel when the sale arrives; a repeated
event changes no fact, so its delta is zero. Replaying the topics rebuilds the same facts,
hence the same rollups.

A contribution is a counter keyed by `Cell` (day, channel, supplier, metric, label,
since) holding a `(value, amount)` pair: counts and micro-units are exact integers;
histogram cells hold a sample count and the sum of their milliseconds. `since` is the
day of an earlier occurrence that makes this one not count in windows starting on or
before that day (a shipment reported delivered again, an order failing routing again);
it is empty for everything else. The reading side is `rollup_report`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from functools import cache
from operator import itemgetter
from typing import Any

UNKNOWN = "unknown"
NO_SUPPLIER = ""
NOT_SINCE = ""
BINS_PER_DOUBLING = 8
"""Histogram resolution: bin edges grow by 2^(1/8) (9.05 %) from 1 ms."""
PERCENTILE_ERROR = 2 ** (1 / BINS_PER_DOUBLING) - 1
"""Bound on a reported percentile's relative error (the bin's mean vs the exact sample)."""

Row = Mapping[str, Any]
OrderFacts = Mapping[str, Sequence[Row]]
"""An order's fact rows by table name (`sale`, `confirmation_line`, ...)."""


Cell = tuple[date, str, str, str, str, str]
"""day, channel, supplier, metric, label, since (a plain tuple: built several times per
event, where a named tuple's constructor cost more than the rest of its cell's work)."""


Contribution = dict[Cell, list[int]]
"""Cell -> [value, amount]."""

SUPPLIER_ONLY = frozenset({"s_orders", "s_orders_ccy", "s_gmv"})
"""Metrics of the by-supplier view only (orders and GMV of the lines a supplier confirmed)."""
ALL_ONLY = frozenset(
    {
        "orders",
        "orders_ccy",
        "gmv",
        "confirmed_orders",
        "failed_orders",
        "cancellations",
        "routing_failures",
        "holds",
        "releases",
        "notices",
    }
)
"""Metrics left out of the by-supplier view (null or counted differently there)."""
HISTOGRAMS = frozenset({"latency", "cycle"})
NOTICE_SEPARATOR = "\x1f"


def bin_of(millis: int) -> int:
    """The histogram bin of a duration in ms: 0 for 0, +-(1 + floor(8 log2 |ms|)) otherwise."""
    if millis == 0:
        return 0
    index = 1 + math.floor(math.log2(abs(millis)) * BINS_PER_DOUBLING)
    return index if millis > 0 else -index


def _millis(later: datetime, earlier: datetime) -> int:
    """Milliseconds between two moments, rounded as the from-facts KPIs round seconds."""
    return round(round((later - earlier).total_seconds(), 3) * 1000)


def _add(out: Contribution, cell: Cell, value: int, amount: int = 0) -> None:
    got = out.get(cell)
    if got is None:
        out[cell] = [value, amount]
    else:
        got[0] += value
        got[1] += amount


def _sample(out: Contribution, day: date, channel: str, supplier: str, metric: str, ms: int,
            since: str = NOT_SINCE) -> None:  # fmt: skip
    _add(out, (day, channel, supplier, metric, str(bin_of(ms)), since), 1, ms)


def contribution(
    order: OrderFacts, parts: Iterable[str] | None = None, into: Contribution | None = None
) -> Contribution:
    """What one order's facts add to the rollups (see the module docstring); `parts`: only
    those parts of it (`PARTS`), e.g. the ones a batch of new facts can change; `into`:
    added to these cells (returned), not to new ones."""
    out: Contribution = {} if into is None else into
    sales = order.get("sale", ())
    sale = sales[0] if sales else None
    channel = sale["channel"] if sale else UNKNOWN
    placed_at: datetime | None = sale["placed_at"] if sale else None
    for name in PARTS if parts is None else parts:
        PARTS[name][1](out, order, sale, channel, placed_at)
    return out


def _orders(
    out: Contribution, _: OrderFacts, sale: Row | None, channel: str, __: datetime | None
) -> None:
    """Orders and GMV by placing day."""
    if sale is not None:
        day, ccy = sale["placed_at"].date(), sale["currency"]
        _add(out, (day, channel, NO_SUPPLIER, "orders", "", NOT_SINCE), 1)
        _add(out, (day, channel, NO_SUPPLIER, "orders_ccy", ccy, NOT_SINCE), 1)
        _add(out, (day, channel, NO_SUPPLIER, "gmv", ccy, NOT_SINCE), sale["total_micros"])


def _confirmed_lines(
    out: Contribution, order: OrderFacts, sale: Row | None, _: str, __: datetime | None
) -> None:
    """What the lines' latest confirmations add (an order placed, whose lines are known)."""
    if sale is not None:
        _lines(out, order, sale)


def _lines(out: Contribution, order: OrderFacts, sale: Row) -> None:
    """Margin, and the by-supplier orders and GMV, from the latest confirmation of each line."""
    confirmations = {c["event_id"]: c for c in order.get("confirmation", ())}
    prices = {sl["line_id"]: sl["unit_price_micros"] for sl in order.get("sale_line", ())}
    latest: dict[str, tuple[tuple[datetime, str], Row, Row]] = {}
    for cl in order.get("confirmation_line", ()):
        c = confirmations.get(cl["event_id"])
        if c is None or cl["line_id"] not in prices:
            continue
        rank = (c["confirmed_at"], c["event_id"])
        seen = latest.get(cl["line_id"])
        if seen is None or rank > seen[0]:
            latest[cl["line_id"]] = (rank, cl, c)
    day, channel, ccy = sale["placed_at"].date(), sale["channel"], sale["currency"]
    suppliers: set[str] = set()
    for line_id, (_, cl, c) in latest.items():
        supplier, price = c["supplier_id"], prices[line_id]
        if supplier not in suppliers:
            suppliers.add(supplier)
            _add(out, (day, channel, supplier, "s_orders", "", NOT_SINCE), 1)
            _add(out, (day, channel, supplier, "s_orders_ccy", ccy, NOT_SINCE), 1)
        _add(out, (day, channel, supplier, "s_gmv", ccy, NOT_SINCE), cl["quantity"] * price)
        if c["currency"] == ccy:
            margin = cl["quantity"] * (price - cl["unit_cost_micros"])
            _add(out, (day, channel, supplier, "margin", ccy, NOT_SINCE), margin, 1)


def _firsts(order: OrderFacts) -> tuple[dict[str, datetime], dict[str, datetime]]:
    """Each supplier's first confirmation and earliest ship-by of the order."""
    confirmed: dict[str, datetime] = {}
    ship_by: dict[str, datetime] = {}
    for c in order.get("confirmation", ()):
        s, at, by = c["supplier_id"], c["confirmed_at"], c["ship_by"]
        seen = confirmed.get(s)
        if seen is None:
            confirmed[s], ship_by[s] = at, by
            continue
        if at < seen:
            confirmed[s] = at
        if by < ship_by[s]:
            ship_by[s] = by
    return confirmed, ship_by


def _confirmations(
    out: Contribution, order: OrderFacts, _: Row | None, channel: str, placed_at: datetime | None
) -> None:
    """Latency by confirmation day, and the order's first confirmation."""
    confirmed, _ = _firsts(order)
    if not confirmed:
        return
    if placed_at is not None:
        for s, at in confirmed.items():
            _sample(out, at.date(), channel, s, "latency", _millis(at, placed_at))
    first = min(confirmed.values())
    _add(out, (first.date(), channel, NO_SUPPLIER, "confirmed_orders", "", NOT_SINCE), 1)


def _supplier_orders(
    out: Contribution, order: OrderFacts, _: Row | None, channel: str, __: datetime | None
) -> None:
    """On-time and delays by due day, per supplier confirming."""
    confirmed, ship_by = _firsts(order)
    if not confirmed:
        return
    dispatched: dict[str, datetime] = {}
    for d in order.get("dispatch", ()):
        s, at = d["supplier_id"], d["dispatched_at"]
        seen = dispatched.get(s)
        if seen is None or at < seen:
            dispatched[s] = at
    reasons: dict[str, set[str]] = {}
    for d in order.get("delay", ()):
        reasons.setdefault(d["supplier_id"], set()).add(d["reason"])
    for s in confirmed:
        due = ship_by[s]
        day = due.date()
        _add(out, (day, channel, s, "due", "", NOT_SINCE), 1)
        sent = dispatched.get(s)
        why = reasons.get(s)
        if sent is not None and sent <= due:
            _add(out, (day, channel, s, "on_time", "", NOT_SINCE), 1)
        elif sent is not None or (why and "no_tracking_by_deadline" in why):
            _add(out, (day, channel, s, "late", "", NOT_SINCE), 1)
        if why:
            _add(out, (day, channel, s, "delayed", "", NOT_SINCE), 1)
            for reason in why:
                _add(out, (day, channel, s, "delayed_by", reason, NOT_SINCE), 1)


def _occurrences(
    out: Contribution, order: OrderFacts, _: Row | None, channel: str, __: datetime | None
) -> None:
    """Routing failures (and the distinct orders failing), cancellations, holds, notices."""
    failed_days: set[date] = set()
    for rf in order.get("routing_failure", ()):
        day = rf["failed_at"].date()
        failed_days.add(day)
        _add(out, (day, channel, NO_SUPPLIER, "routing_failures", rf["reason"], NOT_SINCE), 1)
    previous = NOT_SINCE
    for day in sorted(failed_days):
        _add(out, (day, channel, NO_SUPPLIER, "failed_orders", "", previous), 1)
        previous = day.isoformat()
    for table, metric, at, label in (
        ("cancellation", "cancellations", "cancelled_at", "reason"),
        ("hold", "holds", "held_at", "reason"),
        ("hold_release", "releases", "released_at", None),
    ):
        for r in order.get(table, ()):
            text = r[label] if label else ""
            _add(out, (r[at].date(), channel, NO_SUPPLIER, metric, text, NOT_SINCE), 1)
    for n in order.get("notice", ()):
        label = NOTICE_SEPARATOR.join((n["kind"], n["channel"], n["status"]))
        _add(out, (n["sent_at"].date(), channel, NO_SUPPLIER, "notices", label, NOT_SINCE), 1)


def _deliveries(
    out: Contribution, order: OrderFacts, _: Row | None, channel: str, placed_at: datetime | None
) -> None:
    """Deliveries and cycle time by delivery day; a repeat names the day it repeats (`since`)."""
    deliveries = order.get("delivery")
    if not deliveries:
        return
    shipper: dict[str, str] = {}
    for d in order.get("dispatch", ()):
        t = d["tracking_number"]
        shipper[t] = min(shipper.get(t, d["supplier_id"]), d["supplier_id"])
    previous: dict[str, str] = {}
    for dv in sorted(deliveries, key=lambda r: (r["delivered_at"], r["event_id"])):
        t, at = dv["tracking_number"], dv["delivered_at"]
        since = previous.get(t, NOT_SINCE)
        previous[t] = at.date().isoformat()
        supplier = shipper.get(t, NO_SUPPLIER)
        _add(out, (at.date(), channel, supplier, "deliveries", "", since), 1)
        if placed_at is not None:
            _sample(out, at.date(), channel, supplier, "cycle", _millis(at, placed_at), since)


Part = Callable[[Contribution, OrderFacts, Row | None, str, datetime | None], None]
PARTS: dict[str, tuple[frozenset[str], Part]] = {
    "orders": (frozenset({"sale"}), _orders),
    "lines": (
        frozenset({"sale", "sale_line", "confirmation", "confirmation_line"}),
        _confirmed_lines,
    ),
    "confirmations": (frozenset({"sale", "confirmation"}), _confirmations),
    "supplier_orders": (
        frozenset({"sale", "confirmation", "dispatch", "delay"}),
        _supplier_orders,
    ),
    "occurrences": (
        frozenset({"sale", "routing_failure", "cancellation", "hold", "hold_release", "notice"}),
        _occurrences,
    ),
    "deliveries": (frozenset({"sale", "dispatch", "delivery"}), _deliveries),
}
"""The parts of a contribution, each with the fact tables it reads: new facts in a table
change only the parts that read it."""


def parts_reading(tables: Iterable[str]) -> tuple[list[str], frozenset[str]]:
    """The parts new facts in `tables` can change, and every table those parts read."""
    changed = set(tables)
    parts = [name for name, (reads, _) in PARTS.items() if reads & changed]
    return parts, frozenset().union(*(PARTS[name][0] for name in parts))


def batch_delta(
    existing: Mapping[str, OrderFacts],
    new: Mapping[str, Mapping[str, Sequence[Row]]],
    keys: Mapping[str, Sequence[str]],
) -> Contribution:
    """What inserting the `new` fact rows (by order, then table) changes in the rollups,
    given the facts `existing` for those orders (at least the tables the changed parts
    read: `parts_reading`) and each table's key columns.

    An order none of whose new rows is new (a repeated event) is skipped; one with no
    facts before adds its contribution after, with nothing to take away."""
    change: Contribution = {}
    parts, _ = parts_reading({table for rows in new.values() for table in rows})
    for order_id, rows in new.items():
        before_facts = existing.get(order_id, {})
        after_facts, added = _merged(before_facts, rows, keys)
        if not added:
            continue
        contribution(after_facts, parts, into=change)
        if any(before_facts.values()):
            for cell, (value, amount) in contribution(before_facts, parts).items():
                _add(change, cell, -value, -amount)
    return {c: v for c, v in change.items() if v[0] or v[1]}


RollupRow = tuple[str, str, str, str, str, str, str]
"""A stored rollup row's key: dim, period, start, key, metric, label, since (a view is
`dim` all / channel / supplier with its `key`; a period a day or a month from `start`)."""

ALL = "all"
DAY, MONTH = "d", "m"


def rollup_rows(cells: Mapping[Cell, Sequence[int]]) -> dict[RollupRow, list[int]]:
    """Cells spread over the stored views: all / by channel / by supplier, by day and month."""
    out: dict[RollupRow, list[int]] = {}
    get = out.get
    starts: dict[date, tuple[str, str]] = {}
    for (day, channel, supplier, metric, label, since), (value, amount) in cells.items():
        periods = starts.get(day)
        if periods is None:
            periods = starts[day] = (day.isoformat(), day.replace(day=1).isoformat())
        d, m = periods
        if metric in SUPPLIER_ONLY:
            rows: tuple[RollupRow, ...] = ()
        else:
            rows = (
                (ALL, DAY, d, ALL, metric, label, since),
                (ALL, MONTH, m, ALL, metric, label, since),
                ("channel", DAY, d, channel, metric, label, since),
                ("channel", MONTH, m, channel, metric, label, since),
            )
        if supplier != NO_SUPPLIER and metric not in ALL_ONLY:
            rows += (
                ("supplier", DAY, d, supplier, metric, label, since),
                ("supplier", MONTH, m, supplier, metric, label, since),
            )
        for row in rows:
            got = get(row)
            if got is None:
                out[row] = [value, amount]
            else:
                got[0] += value
                got[1] += amount
    return out


def merge_facts(existing: OrderFacts, new: Mapping[str, Iterable[Row]],
                keys: Mapping[str, Sequence[str]]) -> dict[str, list[Row]]:  # fmt: skip
    """The facts after inserting `new` where its key is not taken (first one wins)."""
    return {table: list(rows) for table, rows in _merged(existing, new, keys)[0].items()}


@cache
def _key_of(columns: tuple[str, ...]) -> Callable[[Row], Any]:
    """A row's key: the value of its one key column, or the tuple of its key columns."""
    return itemgetter(*columns)


def _merged(
    existing: OrderFacts, new: Mapping[str, Iterable[Row]], keys: Mapping[str, Sequence[str]]
) -> tuple[dict[str, Sequence[Row]], bool]:
    """`merge_facts`, and whether any new row was added."""
    out: dict[str, Sequence[Row]] = dict(existing)  # tables with nothing new are shared
    added = False
    for table, rows in new.items():
        stored = out.get(table)
        if not stored and isinstance(rows, list) and len(rows) == 1:
            out[table] = rows  # the usual case: one new row where there was none
            added = True
            continue
        have = out[table] = list(stored or ())
        key_of = _key_of(tuple(keys[table]))
        taken = set(map(key_of, have))
        for r in rows:
            key = key_of(r)
            if key not in taken:
                taken.add(key)
                have.append(r)
                added = True
    return out, added
