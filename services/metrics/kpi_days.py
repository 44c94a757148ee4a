"""The by-day KPI report's items, kept rendered per day: a read recomputes only the days
whose rollups changed since (today's, a late event's), so it costs the same whatever the
history.

Each day's item is rendered once from that day's whole-shop rollup rows and kept with
the day's revision (`kpi_day_revision`, bumped in the transaction that changes the
day's rows, never reset). A read loads the window's revisions first and then the rows
of the days whose revision moved: a copy is kept only under a revision read before its
rows, so it is never newer-labelled than it is, and the answer is the one computed from
the rows at that revision. A day whose rows hold repeats (`since`) has one rendering
per set of repeats the window's first day leaves out.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from services.metrics import domain, rollup_report
from services.metrics.rollup_report import DayRow
from services.metrics.store import MetricsUnitOfWork

Render = Callable[[dict[str, Any]], bytes]
"""An item's response JSON (the route's own serialisation of `KpiItem`)."""


@dataclass
class _Day:
    revision: int
    repeats: list[str]
    rows: list[DayRow] | None
    """Dropped once rendered unless the day has repeats (a window's first day changes it)."""
    rendered: dict[int, bytes] = field(default_factory=dict)
    """By how many of `repeats` are before the window's first day."""


class DayItems:
    """Rendered by-day items, per day and revision; at most `max_days` days kept (or the
    window being read, if longer)."""

    def __init__(self, uows: Callable[[], MetricsUnitOfWork], max_days: int = 1_500) -> None:
        self._uows = uows
        self._max_days = max_days
        self._days: dict[str, _Day] = {}

    async def rendered(self, first: date, last: date, render: Render) -> list[bytes]:
        """Each day's item of the window `first`..`last`, rendered, in day order."""
        days = domain.days_between(first, last)
        async with self._uows() as uow:
            revisions = await uow.rollups.day_revisions(first, last)  # before the rows
            stale = [d for d in days if self._revision(d) != revisions.get(d, 0)]
            # taken before the await: a read meanwhile may drop them from `_days`
            got = {d: self._days[d] for d in set(days).difference(stale)}
            loaded = await uow.rollups.day_rows([d for d in stale if d in revisions])
        for day in stale:  # no await from here on: no other read changes the days kept
            rows = loaded.get(day, [])
            self._days.pop(day, None)
            got[day] = self._days[day] = _Day(
                revisions.get(day, 0), rollup_report.repeats(rows), rows
            )
        wanted = set(days)
        for day in [d for d in self._days if d not in wanted][
            : max(0, len(self._days) - self._max_days)
        ]:
            del self._days[day]  # the longest kept first
        start = first.isoformat()
        return [self._render(day, got[day], start, render) for day in days]

    def kept(self, day: str) -> int | None:
        """The revision of the day's copy, if one is kept."""
        return self._revision(day)

    def _revision(self, day: str) -> int | None:
        got = self._days.get(day)
        return None if got is None else got.revision

    @staticmethod
    def _render(day: str, got: _Day, first: str, render: Render) -> bytes:
        counted = bisect_left(got.repeats, first)  # the repeats before the first day count
        done = got.rendered.get(counted)
        if done is None:
            cells = rollup_report.day_cells(got.rows or (), first)
            done = got.rendered[counted] = render(rollup_report.item(day, cells, False))
            if not got.repeats:
                got.rows = None  # its one rendering is all it will need
        return done
