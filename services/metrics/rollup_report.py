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
from services.metrics.rollup import NOTICE_SEPARATOR

Sums = Mapping[tuple[str, str], Sequence[int]]
"""(metric, label) -> [value, amount], summed over a window for one group key."""


class _Indexed:
    """A group's sums by metric, so each KPI looks at its own cells only."""

    def __init__(self, sums: Sums) -> None:
        self.by_metric: dict[str, list[tuple[str, int, int]]] = {}
        for (metric, label), (value, amount) in sums.items():
            self.by_metric.setdefault(metric, []).append((label, value, amount))

    def cells(self, metric: str) -> list[tuple[str, int, int]]:
        return self.by_metric.get(metric, [])

    def labels(self, metric: str) -> dict[str, int]:
        return {label: value for label, value, _ in self.cells(metric) if value != 0}

    def value(self, metric: str) -> int:
        return sum(value for _, value, _ in self.cells(metric))


def percentiles(sums: Sums | _Indexed, metric: str) -> dict[str, Any]:
    """p50/p95 (nearest rank) and the exact count from a histogram's bins, or from the
    bins the query found already (`<metric>@count`, `@p50`, `@p95`)."""
    indexed = sums if isinstance(sums, _Indexed) else _Indexed(sums)
    found = indexed.cells(f"{metric}@count")
    if found:

        def mean(q: int) -> float | None:
            cells = indexed.cells(f"{metric}@p{q}")
            return round(cells[0][2] / cells[0][1]) / 1000 if cells else None

        return {"p50": mean(50), "p95": mean(95), "count": found[0][1]}
    bins = sorted(
        (int(label), value, amount) for label, value, amount in indexed.cells(metric) if value > 0
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


def present(sums: Sums) -> bool:
    """Whether anything was counted for this key (a key whose facts moved away is not)."""
    return any(value or amount for value, amount in sums.values())


def item(key: str, sums: Sums, per_supplier: bool) -> dict[str, Any]:
    """One KPI item, as `domain._render` shapes it."""
    prefix = "s_" if per_supplier else ""
    x = _Indexed(sums)
    orders_ccy = x.labels(f"{prefix}orders_ccy")
    amounts = {c: v for c, v, _ in x.cells(f"{prefix}gmv")}
    gmv = {c: amounts.get(c, 0) for c in orders_ccy}  # an order of 0.00 still shows its currency
    margin = {c: v for c, v, n in x.cells("margin") if n}
    confirmed, failed = x.value("confirmed_orders"), x.value("failed_orders")
    due, on_time, late = x.value("due"), x.value("on_time"), x.value("late")
    delayed, by_reason = x.value("delayed"), x.labels("delayed_by")
    cancellations = x.labels("cancellations")
    failures, holds = x.labels("routing_failures"), x.labels("holds")
    notices = sorted(
        (tuple(label.split(NOTICE_SEPARATOR)), n) for label, n in x.labels("notices").items()
    )

    def only(value: Any) -> Any:
        return None if per_supplier else value

    return {
        "key": key,
        "orders": x.value(f"{prefix}orders"),
        "gmv": {c: money(gmv[c], c) for c in sorted(gmv)},
        "aov": {c: mean_money(gmv[c], orders_ccy[c], c) for c in sorted(gmv)},
        "gross_margin": {c: money(margin[c], c) for c in sorted(margin)},
        "confirmed_orders": only(confirmed),
        "confirmation_rate": only(ratio(confirmed, confirmed + failed)),
        "confirmation_latency_s": percentiles(x, "latency"),
        "supplier_orders_due": due,
        "shipped_on_time": on_time,
        "shipped_late": late,
        "on_time_rate": ratio(on_time, on_time + late),
        "delayed_supplier_orders": delayed,
        "delay_rate": ratio(delayed, due),
        "delays_by_reason": dict(sorted(by_reason.items())),
        "delay_rate_by_reason": {r: ratio(n, due) for r, n in sorted(by_reason.items())},
        "deliveries": x.value("deliveries"),
        "cycle_time_s": percentiles(x, "cycle"),
        "cancellations": only(sum(cancellations.values())),
        "cancellations_by_reason": only(dict(sorted(cancellations.items()))),
        "routing_failures": only(sum(failures.values())),
        "routing_failures_by_reason": only(dict(sorted(failures.items()))),
        "holds": only(sum(holds.values())),
        "holds_by_reason": only(dict(sorted(holds.items()))),
        "releases": only(x.value("releases")),
        "notices_sent": only(sum(n for (_, _, s), n in notices if s == "sent")),
        "notices": only(
            [{"kind": k, "channel": ch, "status": s, "count": n} for (k, ch, s), n in notices]
        ),
    }


def items(
    grouped: Mapping[str, Sums], per_supplier: bool, keys: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """Items sorted by key: every key of `keys`, and every other key with something counted."""
    wanted = set(keys) | {k for k, sums in grouped.items() if present(sums)}
    return [item(k, grouped.get(k, {}), per_supplier) for k in sorted(wanted)]
