"""Read side: the KPI report and supplier ranking of a window of UTC days, event counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
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
        return datetime.combine(self.first, clock(), UTC)

    @property
    def end(self) -> datetime:
        return datetime.combine(self.last + timedelta(days=1), clock(), UTC)


class FactsCache:
    """The facts of a window, loaded once per `ttl_s` and shared by concurrent requests.

    The dashboard asks for a window's KPIs and its supplier ranking on every refresh,
    and several people may watch it: one load serves them all. Answers are at most
    `ttl_s` seconds behind the database (0: every request loads).
    """

    def __init__(self, uows: Callable[[], MetricsUnitOfWork], ttl_s: float) -> None:
        self._uows = uows
        self._ttl_s = ttl_s
        self._loads: dict[Window, tuple[float, asyncio.Task[domain.Facts]]] = {}

    async def _load(self, window: Window) -> domain.Facts:
        async with self._uows() as uow:
            return await uow.facts.load(window.start, window.end)

    async def facts(self, window: Window) -> domain.Facts:
        if self._ttl_s <= 0:
            return await self._load(window)
        now = time.monotonic()
        for key, (started, task) in list(self._loads.items()):
            if task.done() and (
                now - started > self._ttl_s or task.cancelled() or task.exception() is not None
            ):
                del self._loads[key]
        if window not in self._loads:
            self._loads[window] = (now, asyncio.create_task(self._load(window)))
        return await asyncio.shield(self._loads[window][1])


async def report(cache: FactsCache, window: Window, group_by: domain.GroupBy) -> dict[str, Any]:
    """`{"from", "to", "group_by", "items", "total"}`; every day is an item when by day."""
    facts = await cache.facts(window)
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


async def supplier_ranking(cache: FactsCache, window: Window) -> dict[str, Any]:
    facts = await cache.facts(window)
    items = domain.kpis(facts, domain.GroupBy.SUPPLIER, window.start, window.end)
    ranked = [
        {"rank": n, "supplier_id": item["key"], **item}
        for n, item in enumerate(domain.ranking(items), start=1)
    ]
    return {"from": window.first, "to": window.last, "items": ranked, "next_cursor": None}


async def event_counts(consumer: str, uow: MetricsUnitOfWork) -> dict[str, int]:
    """How many distinct events of each type `consumer` has applied."""
    async with uow:
        return await uow.applied.counts(consumer)
