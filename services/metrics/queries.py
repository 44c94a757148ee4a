"""Read side: the KPI report and supplier ranking of a window of UTC days, event counts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any, TypeVar

from services.metrics import domain, rollup, rollup_report
from services.metrics.aftersales import AfterSalesFacts, after_sales_kpis
from services.metrics.kpi_days import DayItems, Render
from services.metrics.kpi_groups import GroupSums
from services.metrics.store import MetricsUnitOfWork

T = TypeVar("T")
K = TypeVar("K")

Grouped = dict[str, dict[str, list[tuple[str, int, int]]]]
"""Summed rollup cells per group key, by metric (see `RollupRepository.sums`)."""


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

    def __init__(
        self, uows: Callable[[], MetricsUnitOfWork], ttl_s: float, max_windows: int = 64
    ) -> None:
        self._uows = uows
        self._ttl_s = ttl_s
        self._max_windows = max_windows
        """Windows held at once (the query string chooses them): past it, oldest out."""
        self._loads: dict[Window, tuple[float, asyncio.Task[domain.Facts]]] = {}
        self._after_sales: dict[Window, tuple[float, asyncio.Task[AfterSalesFacts]]] = {}
        self._sums: dict[tuple[Window, str, str | None], tuple[float, asyncio.Task[Grouped]]] = {}
        self.days = DayItems(uows)
        """By-day items, exact (kept per day's revision, whatever `ttl_s`)."""
        self.groups = GroupSums(uows)
        """Window sums by channel, by supplier and of the whole shop, exact (from row
        groups kept per their days' revisions, whatever `ttl_s`)."""

    async def _load(self, window: Window) -> domain.Facts:
        async with self._uows() as uow:
            return await uow.facts.load(window.start, window.end)

    async def _load_after_sales(self, window: Window) -> AfterSalesFacts:
        async with self._uows() as uow:
            return await uow.after_sales.load(window.start, window.end)

    async def _sum(self, view: tuple[Window, str, str | None]) -> Grouped:
        window, dim, by = view
        async with self._uows() as uow:
            return await uow.rollups.sums(
                dim, window.first, window.last, by=by, per_day=by == "start"
            )

    def _shared(
        self,
        loads: dict[K, tuple[float, asyncio.Task[T]]],
        window: K,
        load: Callable[[K], Coroutine[Any, Any, T]],
    ) -> asyncio.Future[T]:
        now = time.monotonic()
        for key, (started, task) in list(loads.items()):
            if task.done() and (
                now - started > self._ttl_s or task.cancelled() or task.exception() is not None
            ):
                del loads[key]
        if window not in loads:
            for key in list(loads)[: max(0, len(loads) - self._max_windows + 1)]:
                if loads[key][1].done():  # in-flight loads finish for their waiters
                    del loads[key]
            if len(loads) >= self._max_windows:
                return asyncio.ensure_future(load(window))  # not kept: full of live loads
            loads[window] = (now, asyncio.create_task(load(window)))
        return asyncio.shield(loads[window][1])

    async def facts(self, window: Window) -> domain.Facts:
        if self._ttl_s <= 0:
            return await self._load(window)
        return await self._shared(self._loads, window, self._load)

    async def sums(self, window: Window, dim: str, by: str | None) -> Grouped:
        """The window's rollups for one view (`dim`), per `by` (see `RollupRepository.sums`)."""
        if self._ttl_s <= 0:
            return await self._sum((window, dim, by))
        return await self._shared(self._sums, (window, dim, by), self._sum)

    async def after_sales(self, window: Window) -> AfterSalesFacts:
        """The window's returns, refunds, complaints and shipments (cached likewise)."""
        if self._ttl_s <= 0:
            return await self._load_after_sales(window)
        return await self._shared(self._after_sales, window, self._load_after_sales)


_VIEWS: dict[domain.GroupBy, tuple[str, str]] = {
    domain.GroupBy.DAY: ("all", "start"),
    domain.GroupBy.CHANNEL: ("channel", "key"),
    domain.GroupBy.SUPPLIER: ("supplier", "key"),
}
"""How each grouping reads the rollups: the view (`dim`) and the column items are keyed by."""


async def _items(
    cache: FactsCache, window: Window, group_by: domain.GroupBy | None, afresh: bool = False
) -> list[dict[str, Any]]:
    """KPI items of a window from the rollups (`group_by` None: the one total item): from
    the kept row groups, or (by day, or `afresh`) summed by the database."""
    if group_by is None:
        if afresh:
            total = await cache.sums(window, "all", None)
        else:
            total = await cache.groups.sums(rollup.ALL, window.first, window.last)
        return [rollup_report.item(domain.TOTAL, total.get(domain.TOTAL, {}), False)]
    dim, by = _VIEWS[group_by]
    keys = domain.days_between(window.first, window.last) if group_by is domain.GroupBy.DAY else ()
    if afresh or group_by is domain.GroupBy.DAY:
        grouped = await cache.sums(window, dim, by)
    else:
        grouped = await cache.groups.sums(dim, window.first, window.last)
    return rollup_report.items(grouped, group_by is domain.GroupBy.SUPPLIER, keys)


async def report(
    cache: FactsCache, window: Window, group_by: domain.GroupBy, *, afresh: bool = False
) -> dict[str, Any]:
    """`{"from", "to", "group_by", "items", "total"}`; every day is an item when by day.
    `afresh`: every sum computed by the database (the path the kept groups must match)."""
    items, (total,) = await asyncio.gather(
        _items(cache, window, group_by, afresh), _items(cache, window, None, afresh)
    )
    return {
        "from": window.first,
        "to": window.last,
        "group_by": group_by,
        "items": items,
        "total": total,
    }


async def day_report(cache: FactsCache, window: Window, render: Render) -> bytes:
    """`report` by day as the response's JSON, each day's item rendered by `render` (kept
    per day: only the days whose rollups changed are read and rendered again)."""
    days, (total,) = await asyncio.gather(
        cache.days.rendered(window.first, window.last, render), _items(cache, window, None)
    )
    head = f'{{"from":"{window.first}","to":"{window.last}","group_by":"day","items":['
    return b"".join((head.encode(), b",".join(days), b'],"total":', render(total), b"}"))


async def after_sales_report(
    cache: FactsCache, window: Window, group_by: domain.GroupBy, now: datetime
) -> dict[str, Any]:
    """After-sales KPIs, shaped like `report`; the refund rate divides by its `orders`
    (from the rollups), the rest is computed from the window's after-sales facts."""
    after = await cache.after_sales(window)

    async def items(group: domain.GroupBy | None) -> list[dict[str, Any]]:
        orders = {i["key"]: i["orders"] for i in await _items(cache, window, group)}
        return after_sales_kpis(after, group, window.start, window.end, now, orders=orders)

    (total,) = await items(None)
    return {
        "from": window.first,
        "to": window.last,
        "group_by": group_by,
        "items": await items(group_by),
        "total": total,
    }


async def supplier_ranking(cache: FactsCache, window: Window) -> dict[str, Any]:
    items = await _items(cache, window, domain.GroupBy.SUPPLIER)
    ranked = [
        {"rank": n, "supplier_id": item["key"], **item}
        for n, item in enumerate(domain.ranking(items), start=1)
    ]
    return {"from": window.first, "to": window.last, "items": ranked, "next_cursor": None}


async def event_counts(consumer: str, uow: MetricsUnitOfWork) -> dict[str, int]:
    """How many distinct events of each type `consumer` has applied."""
    async with uow:
        return await uow.applied.counts(consumer)
