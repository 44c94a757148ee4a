"""Kept by-day items (services.metrics.kpi_days) over a fake unit of work: only the days
whose revision moved are read again, a window's first day picks a repeat's rendering,
and the days kept stay bounded."""

from __future__ import annotations

import asyncio
import json
from datetime import date
from typing import Any

from services.metrics.kpi_days import DayItems


class _Rollups:
    def __init__(self) -> None:
        self.revisions: dict[str, int] = {}
        self.rows: dict[str, list[tuple[str, str, str, int, int]]] = {}
        self.read: list[list[str]] = []
        self.gate: asyncio.Event | None = None
        """The next read of rows waits for it (once `waiting` is set)."""
        self.waiting = asyncio.Event()

    async def day_revisions(self, first: date, last: date) -> dict[str, int]:
        return {
            d: r for d, r in self.revisions.items() if first.isoformat() <= d <= last.isoformat()
        }

    async def day_rows(self, days: list[str]) -> dict[str, list[tuple[str, str, str, int, int]]]:
        self.read.append(sorted(days))
        got = {d: list(self.rows.get(d, [])) for d in days}
        if self.gate is not None:
            gate, self.gate = self.gate, None
            self.waiting.set()
            await gate.wait()
        return got


class _Uow:
    def __init__(self, rollups: _Rollups) -> None:
        self.rollups = rollups

    async def __aenter__(self) -> _Uow:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None


def _render(item: dict[str, Any]) -> bytes:
    return json.dumps([item["key"], item["orders"], item["deliveries"]]).encode()


def _items(rollups: _Rollups, max_days: int = 1_500) -> DayItems:
    return DayItems(lambda: _Uow(rollups), max_days=max_days)  # type: ignore[arg-type,return-value]


async def test_only_days_whose_revision_moved_are_read_again() -> None:
    rollups = _Rollups()
    rollups.revisions = {"2026-03-01": 1, "2026-03-03": 1}
    rollups.rows = {
        "2026-03-01": [("orders", "", "", 2, 0)],
        "2026-03-03": [("orders", "", "", 5, 0)],
    }
    days = _items(rollups)
    got = await days.rendered(date(2026, 3, 1), date(2026, 3, 3), _render)
    assert [json.loads(b) for b in got] == [
        ["2026-03-01", 2, 0],
        ["2026-03-02", 0, 0],
        ["2026-03-03", 5, 0],
    ]
    assert rollups.read == [["2026-03-01", "2026-03-03"]]  # a day never rolled up: no read

    assert await days.rendered(date(2026, 3, 1), date(2026, 3, 3), _render) == got
    assert rollups.read[1:] == [[]]

    rollups.rows["2026-03-03"] = [("orders", "", "", 6, 0)]
    rollups.revisions["2026-03-03"] = 2  # a late event on a day kept
    got = await days.rendered(date(2026, 3, 1), date(2026, 3, 3), _render)
    assert json.loads(got[2]) == ["2026-03-03", 6, 0]
    assert rollups.read[2:] == [["2026-03-03"]]


async def test_a_repeat_counts_only_when_its_first_day_is_before_the_window() -> None:
    rollups = _Rollups()
    rollups.revisions = {"2026-03-05": 1}
    rollups.rows = {
        "2026-03-05": [("deliveries", "", "", 1, 0), ("deliveries", "", "2026-03-02", 1, 0)]
    }
    days = _items(rollups)
    wide = await days.rendered(date(2026, 3, 1), date(2026, 3, 5), _render)
    narrow = await days.rendered(date(2026, 3, 3), date(2026, 3, 5), _render)
    assert json.loads(wide[-1]) == ["2026-03-05", 0, 1]  # delivered again within the window
    assert json.loads(narrow[-1]) == ["2026-03-05", 0, 2]  # its first delivery is before it
    again = await days.rendered(date(2026, 3, 2), date(2026, 3, 5), _render)
    assert json.loads(again[-1]) == ["2026-03-05", 0, 1]
    assert len(rollups.read) == 3 and rollups.read[1:] == [[], []]


async def test_the_days_kept_are_bounded_but_never_the_window_being_read() -> None:
    rollups = _Rollups()
    days = _items(rollups, max_days=3)
    await days.rendered(date(2026, 3, 1), date(2026, 3, 5), _render)  # longer than kept
    assert all(days.kept(f"2026-03-0{n}") == 0 for n in range(1, 6))
    await days.rendered(date(2026, 3, 6), date(2026, 3, 6), _render)
    assert [days.kept(f"2026-03-0{n}") for n in range(1, 7)] == [None, None, None, 0, 0, 0]


async def test_a_read_meanwhile_dropping_the_days_kept_changes_no_answer() -> None:
    rollups = _Rollups()
    rollups.revisions = {f"2026-03-0{n}": 1 for n in range(1, 5)}
    rollups.rows = {f"2026-03-0{n}": [("orders", "", "", n, 0)] for n in range(1, 5)}
    days = _items(rollups, max_days=2)
    await days.rendered(date(2026, 3, 1), date(2026, 3, 2), _render)
    rollups.revisions["2026-03-02"] = 2
    rollups.rows["2026-03-02"] = [("orders", "", "", 20, 0)]
    rollups.gate = gate = asyncio.Event()
    first = asyncio.create_task(days.rendered(date(2026, 3, 1), date(2026, 3, 2), _render))
    await rollups.waiting.wait()  # the first read waits for its rows
    await days.rendered(date(2026, 3, 3), date(2026, 3, 4), _render)  # drops days 1 and 2
    assert days.kept("2026-03-01") is None
    gate.set()  # the first read's copy of day 1 was taken before it waited
    assert [json.loads(b) for b in await first] == [["2026-03-01", 1, 0], ["2026-03-02", 20, 0]]
