"""Kept rollup row groups (services.metrics.kpi_groups) over a fake unit of work: a window
reads whole months monthly and the rest daily, only groups whose days' revisions moved
are read again, histograms are summed bin by bin before a percentile is read, a repeat
counts only when its first day is before the window, and the groups kept stay bounded."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from datetime import date

from services.metrics import rollup
from services.metrics.kpi_groups import GroupSums, groups

Row = tuple[str, str, str, str, int, int]


class _Rollups:
    def __init__(self) -> None:
        self.revisions: dict[str, int] = {}
        self.rows: dict[tuple[str, str, str], list[Row]] = {}
        self.read: list[list[tuple[str, str]]] = []
        self.gate: asyncio.Event | None = None
        """The next read of rows waits for it (once `waiting` is set)."""
        self.waiting = asyncio.Event()

    async def day_revisions(self, first: date, last: date) -> dict[str, int]:
        return {
            d: r for d, r in self.revisions.items() if first.isoformat() <= d <= last.isoformat()
        }

    async def group_rows(
        self, dim: str, wanted: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], list[Row]]:
        self.read.append(sorted(wanted))
        got = {g: list(self.rows.get((dim, *g), [])) for g in wanted}
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


def _sums(rollups: _Rollups, max_groups: int = 1_000) -> GroupSums:
    return GroupSums(lambda: _Uow(rollups), max_groups=max_groups)  # type: ignore[arg-type,return-value]


def test_a_window_is_its_whole_months_and_its_ragged_days() -> None:
    got = groups(date(2026, 1, 30), date(2026, 4, 2))
    assert [g for g, _ in got] == [
        ("d", "2026-01-30"), ("d", "2026-01-31"), ("m", "2026-02-01"), ("m", "2026-03-01"),
        ("d", "2026-04-01"), ("d", "2026-04-02"),
    ]  # fmt: skip
    assert got[2][1][0] == "2026-02-01" and got[2][1][-1] == "2026-02-28"
    assert [g for g, _ in groups(date(2026, 2, 1), date(2026, 2, 27))][-1] == ("d", "2026-02-27")


async def test_only_groups_whose_days_moved_are_read_again() -> None:
    rollups = _Rollups()
    rollups.revisions = {"2026-02-03": 1, "2026-03-02": 1}
    rollups.rows = {
        ("channel", "m", "2026-02-01"): [("shop", "orders", "", "", 2, 0)],
        ("channel", "d", "2026-03-02"): [("shop", "orders", "", "", 5, 0)],
    }
    sums = _sums(rollups)
    got = await sums.sums("channel", date(2026, 2, 1), date(2026, 3, 2))
    assert got == {"shop": {"orders": [("", 7, 0)]}}
    assert rollups.read == [[("d", "2026-03-02"), ("m", "2026-02-01")]]  # none without rows

    assert await sums.sums("channel", date(2026, 2, 1), date(2026, 3, 2)) == got
    assert len(rollups.read) == 1

    rollups.rows["channel", "m", "2026-02-01"] = [("shop", "orders", "", "", 3, 0)]
    rollups.revisions["2026-02-20"] = 1  # a late event on another day of a month kept
    got = await sums.sums("channel", date(2026, 2, 1), date(2026, 3, 2))
    assert got == {"shop": {"orders": [("", 8, 0)]}}
    assert rollups.read[1:] == [[("m", "2026-02-01")]]
    assert await sums.sums("supplier", date(2026, 2, 1), date(2026, 3, 2)) == {}  # its own


async def test_histograms_are_summed_by_bin_before_a_percentile_is_read() -> None:
    rollups = _Rollups()
    rollups.revisions = {"2026-03-01": 1, "2026-03-02": 1}
    b10, b20 = str(rollup.bin_of(10)), str(rollup.bin_of(20))
    rollups.rows = {
        ("supplier", "d", "2026-03-01"): [("s1", "latency", b10, "", 3, 30)],
        ("supplier", "d", "2026-03-02"): [("s1", "latency", b20, "", 4, 80)],
    }
    got = (await _sums(rollups).sums("supplier", date(2026, 3, 1), date(2026, 3, 2)))["s1"]
    # alone each day's median is its own bin; summed, the 4th of 7 samples is in b20's
    assert got["latency@count"] == [("", 7, 0)]
    assert got["latency@p50"] == [("", 4, 80)] and got["latency@p95"] == [("", 4, 80)]


async def test_a_repeat_counts_only_when_its_first_day_is_before_the_window() -> None:
    rollups = _Rollups()
    rollups.revisions = {"2026-03-05": 1}
    rollups.rows = {
        ("supplier", "d", "2026-03-05"): [
            ("s1", "deliveries", "", "", 1, 0),
            ("s1", "deliveries", "", "2026-03-02", 1, 0),
        ]
    }
    sums = _sums(rollups)
    wide = await sums.sums("supplier", date(2026, 3, 1), date(2026, 3, 5))
    narrow = await sums.sums("supplier", date(2026, 3, 3), date(2026, 3, 5))
    assert wide == {"s1": {"deliveries": [("", 1, 0)]}}  # delivered again within the window
    assert narrow == {"s1": {"deliveries": [("", 2, 0)]}}  # its first delivery is before it
    assert len(rollups.read) == 1


async def test_the_groups_kept_are_bounded_but_never_the_window_being_read() -> None:
    rollups = _Rollups()
    rollups.revisions = {f"2026-03-0{n}": 1 for n in range(1, 7)}
    sums = _sums(rollups, max_groups=3)
    await sums.sums("channel", date(2026, 3, 1), date(2026, 3, 5))  # longer than kept
    assert all(sums.version("channel", ("d", f"2026-03-0{n}")) == (1,) for n in range(1, 6))
    await sums.sums("channel", date(2026, 3, 6), date(2026, 3, 6))
    kept = [sums.version("channel", ("d", f"2026-03-0{n}")) for n in range(1, 7)]
    assert kept == [None, None, None, (1,), (1,), (1,)]


async def test_a_read_meanwhile_dropping_the_groups_kept_changes_no_answer() -> None:
    rollups = _Rollups()
    rollups.revisions = {f"2026-03-0{n}": 1 for n in range(1, 5)}
    rollups.rows = {("channel", "d", f"2026-03-0{n}"): [("shop", "orders", "", "", n, 0)]
                    for n in range(1, 5)}  # fmt: skip
    sums = _sums(rollups, max_groups=2)
    await sums.sums("channel", date(2026, 3, 1), date(2026, 3, 2))
    rollups.revisions["2026-03-02"] = 2
    rollups.rows["channel", "d", "2026-03-02"] = [("shop", "orders", "", "", 20, 0)]
    rollups.gate = gate = asyncio.Event()
    first = asyncio.create_task(sums.sums("channel", date(2026, 3, 1), date(2026, 3, 2)))
    await rollups.waiting.wait()  # the first read waits for its rows
    other = await sums.sums("channel", date(2026, 3, 3), date(2026, 3, 4))  # drops 1 and 2
    assert sums.version("channel", ("d", "2026-03-01")) is None
    assert other == {"shop": {"orders": [("", 7, 0)]}}
    gate.set()  # the first read's copy of day 1 was taken before it waited
    assert await first == {"shop": {"orders": [("", 21, 0)]}}
