"""Window sums of a rollup view (whole shop, by channel, by supplier) from row groups kept
in the process: a read loads only the groups whose rollups changed since, so it costs the
same whatever the history.

A row group is one view's rows of one period: a day's, or a whole month's (a window reads
its whole months monthly and its ragged ends daily, as `RollupRepository.sums` does). It
is kept under its version, the revisions of its days (`kpi_day_revision`, bumped in the
transaction that changes any of a day's rows, moved on by a rebuild's reset): a read
loads the window's revisions first and then the rows of the groups whose version moved,
so a copy is never newer-labelled than it is. The window's groups are then summed per key
in Python: counts and money by adding, histograms by adding their fixed bins (a window's
percentile is not a sum of its days' percentiles, but its bins are the sum of theirs),
each p50/p95 then read off the summed bins by the nearest-rank walk the SQL does. A
repeat (a row with `since`) counts only if its earlier day is before the window. The
sums of the last windows read are kept too, with the groups they were summed from: a
read takes away the old rows of the groups that changed since and adds their new ones
(sums are exact integers, so this is exact), and so costs what changed, not the window's
length. The answer is the one `RollupRepository.sums(dim, first, last, by="key")` gives
from the rows at the revisions read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

from services.metrics import rollup, rollup_report
from services.metrics.rollup_report import Cell
from services.metrics.store import MetricsUnitOfWork

Group = tuple[str, str]
"""A row group of a view: (period, start), period `rollup.DAY` or `rollup.MONTH`."""
Grouped = dict[str, dict[str, list[Cell]]]
"""Summed cells per key, by metric (as `RollupRepository.sums` gives them)."""
Sums = dict[tuple[str, str], list[int]]
"""(metric, label) -> [value, amount]."""


@dataclass
class _Kept:
    version: tuple[int, ...]
    plain: dict[str, dict[tuple[str, str], tuple[int, int]]]
    """key -> (metric, label) -> (value, amount), of the rows without `since`."""
    repeats: list[tuple[str, str, str, str, int, int]]
    """The rows with `since`: key, metric, label, since, value, amount."""


def _month_after(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


@lru_cache(maxsize=256)
def groups(first: date, last: date) -> tuple[tuple[Group, tuple[str, ...]], ...]:
    """The row groups covering `first`..`last` (whole months monthly, the other days
    daily), each with its days."""
    out: list[tuple[Group, tuple[str, ...]]] = []
    day = first
    while day <= last:
        after = _month_after(day)
        if day.day == 1 and after - timedelta(days=1) <= last:
            days = tuple((day + timedelta(days=n)).isoformat() for n in range((after - day).days))
            out.append(((rollup.MONTH, day.isoformat()), days))
            day = after
        else:
            out.append(((rollup.DAY, day.isoformat()), (day.isoformat(),)))
            day += timedelta(days=1)
    return tuple(out)


_CELLS: dict[tuple[str, str], tuple[str, str]] = {}
"""One (metric, label) tuple per cell for every group kept (a few hundred: bins, reasons,
currencies), instead of one per row: a kept row costs about half as much."""


def _kept(version: tuple[int, ...], rows: list[tuple[str, str, str, str, int, int]]) -> _Kept:
    plain: dict[str, dict[tuple[str, str], tuple[int, int]]] = {}
    repeats = []
    cells = _CELLS
    for row in rows:
        key, metric, label, since, value, amount = row
        if since:
            repeats.append(row)
        else:
            cell = (metric, label)
            cell = cells.get(cell) or cells.setdefault(cell, cell)
            (plain.get(key) or plain.setdefault(key, {}))[cell] = (value, amount)
    return _Kept(version, plain, repeats)


@dataclass
class _Window:
    used: dict[Group, _Kept]
    """The groups summed, as they were kept when summed."""
    sums: dict[str, Sums]
    """Their sums per key."""
    cells: Grouped | None = None
    """`sums` as `Cells` per key, once made (until a group changes)."""


def _add(into: dict[str, Sums], kept: _Kept, first: str, sign: int) -> None:
    """Add (`sign` 1) or take away (-1) a group's rows from a window's sums per key."""
    for key, cells in kept.plain.items():
        sums = into.get(key)
        if sums is None:
            into[key] = {cell: [sign * v, sign * a] for cell, (v, a) in cells.items()}
            continue
        for cell, (value, amount) in cells.items():
            got = sums.get(cell)
            if got is None:
                sums[cell] = [sign * value, sign * amount]
            else:
                got[0] += sign * value
                got[1] += sign * amount
    for key, metric, label, since, value, amount in kept.repeats:
        if since < first:  # its earlier day is before the window: this one counts
            sums = into.get(key) or into.setdefault(key, {})
            got = sums.get((metric, label))
            if got is None:
                sums[metric, label] = [sign * value, sign * amount]
            else:
                got[0] += sign * value
                got[1] += sign * amount


class GroupSums:
    """Rollup row groups kept per view and version, at most `max_groups` (or the window
    being read, if more); and the sums of the last `max_windows` windows read, so a read
    adds only the groups that changed since (taking their old rows away)."""

    def __init__(
        self,
        uows: Callable[[], MetricsUnitOfWork],
        max_groups: int = 500,
        max_windows: int = 32,
    ) -> None:
        self._uows = uows
        self._max_groups = max_groups
        self._max_windows = max_windows
        self._kept: dict[tuple[str, Group], _Kept] = {}
        self._windows: dict[tuple[str, date, date], _Window] = {}

    async def sums(self, dim: str, first: date, last: date) -> Grouped:
        """metric -> [(label, value, amount)] per key of view `dim`, summed over
        `first`..`last` (see the module docstring); shared with later reads: not to be
        changed."""
        covering = groups(first, last)
        async with self._uows() as uow:
            revisions = await uow.rollups.day_revisions(first, last)  # before the rows
            versions = {g: tuple(revisions.get(d, 0) for d in days) for g, days in covering}
            versions = {g: v for g, v in versions.items() if any(v)}  # no revision: no rows
            # the copies taken before the await: a read meanwhile may drop them from `_kept`
            have = {g: self._kept.get((dim, g)) for g in versions}
            stale = [g for g, v in versions.items() if (k := have[g]) is None or k.version != v]
            loaded = await uow.rollups.group_rows(dim, stale) if stale else {}
        used: dict[Group, _Kept] = {}
        for group, version in versions.items():  # no await from here on
            got = have[group]
            if got is None or got.version != version:
                self._kept.pop((dim, group), None)
                got = self._kept[dim, group] = _kept(version, loaded.get(group, []))
            used[group] = got
        wanted = {(dim, g) for g, _ in covering}
        for name in [k for k in self._kept if k not in wanted][
            : max(0, len(self._kept) - self._max_groups)
        ]:
            del self._kept[name]  # the longest kept first
        window = self._windows.pop((dim, first, last), None) or _Window({}, {})
        start = first.isoformat()
        for group, kept in used.items():
            old = window.used.get(group)
            if old is not kept:  # new to the window, or changed since it was summed
                window.cells = None
                if old is not None:
                    _add(window.sums, old, start, -1)
                _add(window.sums, kept, start, 1)
        for group in window.used.keys() - used.keys():  # pragma: no cover (revisions only grow)
            window.cells = None
            _add(window.sums, window.used[group], start, -1)
        window.used = used
        self._windows[dim, first, last] = window
        for read in list(self._windows)[: max(0, len(self._windows) - self._max_windows)]:
            del self._windows[read]  # the least recently read first
        if window.cells is None:
            window.cells = {k: rollup_report.summed_cells(s) for k, s in window.sums.items()}
        return window.cells

    def version(self, dim: str, group: Group) -> tuple[int, ...] | None:
        """The version of the group's copy, if one is kept."""
        got = self._kept.get((dim, group))
        return None if got is None else got.version
