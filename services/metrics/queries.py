"""Read side: the KPI report and the supplier ranking of a window of UTC days."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from services.metrics import domain
from services.metrics.store import MetricsUnitOfWork


@dataclass(frozen=True)
class Window:
    """Whole UTC days, `first` to `last` inclusive."""

    first: date
    last: date

    @property
    def start(self) -> datetime:
        return datetime.combine(self.first, time(), UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), time(), UTC)


async def report(
    uow: MetricsUnitOfWork, window: Window, group_by: domain.GroupBy
) -> dict[str, Any]:
    """`{"from", "to", "group_by", "items", "total"}`; every day is an item when by day."""
    async with uow:
        facts = await uow.load_facts(window.start, window.end)
    keys = domain.days_between(window.first, window.last) if group_by is domain.GroupBy.DAY else ()
    items = domain.kpis(facts, group_by, window.start, window.end, keys=keys)
    (total,) = domain.kpis(facts, None, window.start, window.end, keys=[domain.TOTAL])
    return {
        "from": window.first,
        "to": window.last,
        "group_by": group_by,
        "items": items,
        "total": total,
    }


async def supplier_ranking(uow: MetricsUnitOfWork, window: Window) -> dict[str, Any]:
    async with uow:
        facts = await uow.load_facts(window.start, window.end)
    items = domain.kpis(facts, domain.GroupBy.SUPPLIER, window.start, window.end)
    ranked = [
        {"rank": n, "supplier_id": item["key"], **item}
        for n, item in enumerate(domain.ranking(items), start=1)
    ]
    return {"from": window.first, "to": window.last, "items": ranked, "next_cursor": None}
