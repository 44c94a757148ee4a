"""KPI items from summed rollup rows: the same shape `domain.kpis` gives from facts; pure.

Counts and money are exact. A percentile is read off the histogram: the nearest-rank
sample's bin is found exactly, and the mean of the samples in that bin is reported, so it
is exact when the bin's samples are equal and otherwise within `PERCENTILE_ERROR`
(9.05 %) of the exact nearest-rank sample; `count` is always exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from services.metrics.domain import mean_money, money, ratio
from services.metrics.rollup import HISTOGRAMS, NOTICE_SEPARATOR

Cell = tuple[str, int, int]
"""label, value, amount."""
Sums = Mapping[tuple[str, str], Sequence[int]]
"""(metric, label) -> [value, amount], summed over a window for one group key."""
Cells = Mapping[str, Sequence[tuple[str, int, int]]]
"""metric -> [(label, value, amount)]: a group key's sums indexed by metric, as
`RollupRepository.sums` returns them (so each KPI looks at its own cells only)."""


def by_metric(sums: Sums) -> dict[str, list[tuple[str, int, int]]]:
    """`Sums` indexed by metric (`Cells`)."""
    out: dict[str, list[tuple[str, int, int]]] = {}
    for (metric, label), (value, amount) in sums.items():
        out.setdefault(metric, []).append((label, value, amount))
    return out


def percentiles(sums: Sums, metric: str) -> dict[str, Any]:
    """p50/p95 (nearest rank) and the exact count from a histogram's bins."""
    return _percentiles(by_metric(sums), metric)


def _percentiles(cells: Cells, metric: str) -> dict[str, Any]:
    """As `percentiles`, from `Cells`: from the bins the query found already
    (`<metric>@count`, `@p50`, `@p95`), or else from every bin of the histogram."""
    found = cells.get(f"{metric}@count")
    if found:

        def mean(q: int) -> float | None:
            got = cells.get(f"{metric}@p{q}")
            return round(got[0][2] / got[0][1]) / 1000 if got else None

        return {"p50": mean(50), "p95": mean(95), "count": found[0][1]}
    bins = sorted(
        (int(label), value, amount) for label, value, amount in cells.get(metric, ()) if value > 0
    )
    count = sum(n for _, n, _ in bins)

    def rank(q: int) -> float | None:
        if not count:
            return None
        wanted, seen = max(1, math.ceil(Fraction(q, 100) * count)), 0
        for _, n, total_ms in bins:
            seen += n
            if seen >= wanted:
                return round(total_ms / n) / 1000
        raise AssertionError("rank past the last bin")  # pragma: no cover

    return {"p50": rank(50), "p95": rank(95), "count": count}


_NONE: tuple[tuple[str, int, int], ...] = ()


def present(cells: Cells) -> bool:
    """Whether anything was counted for this key (a key whose facts moved away is not)."""
    return any(value or amount for metric in cells.values() for _, value, amount in metric)


def item(key: str, cells: Cells, per_supplier: bool) -> dict[str, Any]:
    """One KPI item, as `domain._render` shapes it."""
    prefix = "s_" if per_supplier else ""
    get = cells.get

    def value(metric: str) -> int:
        got = get(metric)
        return sum(v for _, v, _ in got) if got else 0

    def labels(metric: str) -> dict[str, int]:
        return {label: v for label, v, _ in get(metric, _NONE) if v != 0}

    orders_ccy = labels(f"{prefix}orders_ccy")
    amounts = {c: v for c, v, _ in get(f"{prefix}gmv", _NONE)}
    currencies = sorted(orders_ccy)  # an order of 0.00 still shows its currency
    margin = {c: v for c, v, n in get("margin", _NONE) if n}
    confirmed, failed = value("confirmed_orders"), value("failed_orders")
    due, on_time, late = value("due"), value("on_time"), value("late")
    delayed, by_reason = value("delayed"), sorted(labels("delayed_by").items())
    out = {
        "key": key,
        "orders": value(f"{prefix}orders"),
        "gmv": {c: money(amounts.get(c, 0), c) for c in currencies},
        "aov": {c: mean_money(amounts.get(c, 0), orders_ccy[c], c) for c in currencies},
        "gross_margin": {c: money(margin[c], c) for c in sorted(margin)},
        "confirmed_orders": None,
        "confirmation_rate": None,
        "confirmation_latency_s": _percentiles(cells, "latency"),
        "supplier_orders_due": due,
        "shipped_on_time": on_time,
        "shipped_late": late,
        "on_time_rate": ratio(on_time, on_time + late),
        "delayed_supplier_orders": delayed,
        "delay_rate": ratio(delayed, due),
        "delays_by_reason": dict(by_reason),
        "delay_rate_by_reason": {r: ratio(n, due) for r, n in by_reason},
        "deliveries": value("deliveries"),
        "cycle_time_s": _percentiles(cells, "cycle"),
        "cancellations": None,
        "cancellations_by_reason": None,
        "routing_failures": None,
        "routing_failures_by_reason": None,
        "holds": None,
        "holds_by_reason": None,
        "releases": None,
        "notices_sent": None,
        "notices": None,
    }
    if not per_supplier:
        cancellations, failures = labels("cancellations"), labels("routing_failures")
        holds = labels("holds")
        notices = sorted(
            (tuple(label.split(NOTICE_SEPARATOR)), n) for label, n in labels("notices").items()
        )
        out |= {
            "confirmed_orders": confirmed,
            "confirmation_rate": ratio(confirmed, confirmed + failed),
            "cancellations": sum(cancellations.values()),
            "cancellations_by_reason": dict(sorted(cancellations.items())),
            "routing_failures": sum(failures.values()),
            "routing_failures_by_reason": dict(sorted(failures.items())),
            "holds": sum(holds.values()),
            "holds_by_reason": dict(sorted(holds.items())),
            "releases": value("releases"),
            "notices_sent": sum(n for (_, _, s), n in notices if s == "sent"),
            "notices": [
                {"kind": k, "channel": ch, "status": s, "count": n} for (k, ch, s), n in notices
            ],
        }
    return out


def items(
    grouped: Mapping[str, Cells], per_supplier: bool, keys: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Items sorted by key: every key of `keys`, and every other key with something counted."""
    wanted = set(keys) | {k for k, cells in grouped.items() if present(cells)}
    return [item(k, grouped.get(k, {}), per_supplier) for k in sorted(wanted)]


DayRow = tuple[str, str, str, int, int]
"""A stored whole-shop rollup row of one day: metric, label, since, value, amount."""


def repeats(rows: Iterable[DayRow]) -> list[str]:
    """The distinct `since` days of a day's rows that a window's first day can leave out
    (everything but `failed_orders`, which counts per day): sorted."""
    return sorted({s for m, _, s, _, _ in rows if s and m != "failed_orders"})


def day_cells(rows: Iterable[DayRow], first: str) -> dict[str, list[Cell]]:
    """A day's `Cells` as `RollupRepository.sums` sums them per day for a window whose
    first day is `first`: a repeat counts only if its `since` is before `first`; each
    histogram's p50/p95 bin found by the same nearest-rank walk over its bins."""
    summed: dict[tuple[str, str], list[int]] = {}
    for metric, label, since, value, amount in rows:
        if since >= first and metric != "failed_orders":  # "" (no since) is before any day
            continue
        got = summed.get((metric, label))
        if got is None:
            summed[metric, label] = [value, amount]
        else:
            got[0] += value
            got[1] += amount
    return summed_cells(summed)


def summed_cells(summed: Mapping[tuple[str, str], Sequence[int]]) -> dict[str, list[Cell]]:
    """`Cells` from a key's (metric, label) -> [value, amount] sums over a window, as
    `RollupRepository.sums` gives them: counters as they are, each histogram's bins
    (fixed, so summable) as its sample count and the bins holding its p50 and p95 sample,
    found by the nearest-rank walk the SQL does."""
    cells: dict[str, list[Cell]] = {}
    bins: dict[str, list[tuple[int, int, int]]] = {}
    for (metric, label), (value, amount) in summed.items():
        if metric not in HISTOGRAMS:
            cells.setdefault(metric, []).append((label, value, amount))
        elif value > 0:
            bins.setdefault(metric, []).append((int(label), value, amount))
    for metric, found in bins.items():
        found.sort()
        total = sum(n for _, n, _ in found)
        cells[f"{metric}@count"] = [("", total, 0)]
        for q in (50, 95):
            wanted, seen = max(1, -(-q * total // 100)), 0
            for _, n, ms in found:
                seen += n
                if seen >= wanted:
                    cells[f"{metric}@p{q}"] = [("", n, ms)]
                    break
    return cells
