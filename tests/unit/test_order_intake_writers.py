"""The intake writer's cap on groups in flight: with one writer, orders arriving while a group
is written wait for the next group (one, not many); without a cap, groups overlap."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from services.order import intake_writer
from services.order.handlers.commands import Placed
from services.order.handlers.intake_group import Intake
from services.order.settings import OrderSettings
from shared.testing import eventually

LINGER_S = 0.001


class FakeGroups:
    """`place_together` held until released: the group sizes written, the most at once."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.in_flight = 0
        self.most_at_once = 0
        self.release = asyncio.Event()

    async def __call__(self, group: Sequence[Intake], _uow: Any) -> list[Placed]:
        self.sizes.append(len(group))
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        await self.release.wait()
        self.in_flight -= 1
        return [Placed(i.cmd, created=True) for i in group]  # type: ignore[arg-type]

    async def alone(self, cmd: Any, uow: Any, *, idempotency: Any = None) -> Placed:
        """`place_order`, which a group of one takes."""
        return (await self([Intake(cmd, idempotency)], uow))[0]


@pytest.fixture
def groups(monkeypatch: pytest.MonkeyPatch) -> FakeGroups:
    fake = FakeGroups()
    monkeypatch.setattr(intake_writer, "place_together", fake)
    monkeypatch.setattr(intake_writer, "place_order", fake.alone)
    return fake


async def until(condition: Any) -> None:
    async def probe() -> bool:
        return bool(condition())

    await eventually(probe, timeout=10, interval=LINGER_S / 10)


def place(writer: intake_writer.IntakeWriter, n: int, tag: str) -> list[asyncio.Task[Any]]:
    return [
        asyncio.create_task(writer.place(f"{tag}{i}", None))  # type: ignore[arg-type]
        for i in range(n)
    ]


async def test_one_writer_the_orders_arriving_meanwhile_form_one_next_group(groups):
    writer = intake_writer.IntakeWriter(
        lambda: None,  # type: ignore[arg-type,return-value]
        linger_s=LINGER_S,
        max_group=64,
        writers=1,
    )
    first = place(writer, 2, "a")
    await until(lambda: groups.sizes == [2])
    later = []
    for burst in range(3):  # three lingers' worth of orders while the first group is written
        later += place(writer, 2, f"b{burst}")
        await until(lambda: not writer._waiting or writer._due)
    assert groups.sizes == [2], "a second group started while the first was written"
    groups.release.set()
    answers = await asyncio.gather(*first, *later)
    assert groups.sizes == [2, 6]
    assert groups.most_at_once == 1
    assert [a.order for a in answers] == ["a0", "a1", "b00", "b01", "b10", "b11", "b20", "b21"]


async def test_one_writer_more_than_a_group_waiting_goes_in_full_groups(groups):
    writer = intake_writer.IntakeWriter(
        lambda: None,  # type: ignore[arg-type,return-value]
        linger_s=LINGER_S,
        max_group=3,
        writers=1,
    )
    first = place(writer, 3, "a")  # a full group goes at once
    await until(lambda: groups.sizes == [3])
    later = place(writer, 7, "b")
    await until(lambda: len(writer._waiting) == 7)
    groups.release.set()
    answers = await asyncio.gather(*first, *later)
    assert groups.sizes == [3, 3, 3, 1]
    assert groups.most_at_once == 1
    assert [a.order for a in answers] == ["a0", "a1", "a2"] + [f"b{i}" for i in range(7)]


async def test_without_a_cap_groups_are_written_side_by_side(groups):
    writer = intake_writer.IntakeWriter(
        lambda: None,  # type: ignore[arg-type,return-value]
        linger_s=LINGER_S,
        max_group=64,
    )
    first = place(writer, 2, "a")
    await until(lambda: groups.sizes == [2])
    later = place(writer, 2, "b")
    await until(lambda: groups.sizes == [2, 2])
    assert groups.most_at_once == 2
    groups.release.set()
    await asyncio.gather(*first, *later)


async def test_drain_writes_what_waits_behind_a_busy_writer(groups):
    writer = intake_writer.IntakeWriter(
        lambda: None,  # type: ignore[arg-type,return-value]
        linger_s=60.0,  # no timer fires within the test: drain alone must write them
        max_group=2,
        writers=1,
    )
    first = place(writer, 2, "a")
    await until(lambda: groups.sizes == [2])
    later = place(writer, 1, "b")
    await until(lambda: len(writer._waiting) == 1)
    drained = asyncio.create_task(writer.drain())
    await until(lambda: writer._due)
    groups.release.set()
    await drained
    assert all(t.done() for t in first + later)
    assert groups.sizes == [2, 1]


@pytest.mark.parametrize(
    ("url", "setting", "writers"),
    [
        ("sqlite+aiosqlite:///x.db", 0, 1),
        ("postgresql+asyncpg://u:p@h/db", 0, None),
        ("postgresql+asyncpg://u:p@h/db", 3, 3),
        ("sqlite+aiosqlite:///x.db", 2, 2),
    ],
)
def test_writers_default_to_one_on_sqlite_and_no_cap_on_postgresql(url, setting, writers):
    settings = OrderSettings(database_url=url, order_intake_writers=setting)
    assert settings.intake_writers() == writers
