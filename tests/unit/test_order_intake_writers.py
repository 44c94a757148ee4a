"""The intake writer: orders placed within a linger go to `place_together` as one group, a
lone one and every order without a linger to `place_order`; the cap on groups in flight
defaults to one on SQLite (the grouping itself: `tests/unit/test_group_commit.py`)."""

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
    """`place_together` held until released: the sizes of the groups it was given."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.release = asyncio.Event()

    async def __call__(self, group: Sequence[Intake], _uow: Any) -> list[Placed]:
        self.sizes.append(len(group))
        await self.release.wait()
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


async def test_orders_placed_within_a_linger_are_placed_together(groups):
    writer = intake_writer.IntakeWriter(
        lambda: None,  # type: ignore[arg-type,return-value]
        linger_s=LINGER_S,
        max_group=64,
        writers=1,
    )
    first = place(writer, 2, "a")
    await until(lambda: groups.sizes == [2])
    groups.release.set()
    answers = await asyncio.gather(*first, *place(writer, 1, "b"))
    assert groups.sizes == [2, 1]
    assert [a.order for a in answers] == ["a0", "a1", "b0"]


async def test_without_a_linger_each_order_is_placed_at_once(groups):
    writer = intake_writer.IntakeWriter(
        lambda: None,  # type: ignore[arg-type,return-value]
        linger_s=0.0,
        max_group=64,
    )
    groups.release.set()
    answers = await asyncio.gather(*place(writer, 3, "a"))
    assert groups.sizes == [1, 1, 1]
    assert [a.order for a in answers] == ["a0", "a1", "a2"]


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
