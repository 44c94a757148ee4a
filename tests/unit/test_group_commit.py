"""Group commit (`shared.group_commit`): with one writer, items arriving while a group is
written wait for the next group (one, not many); without a cap, groups overlap; a group
that cannot be written together is written one by one, each item with its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import REGISTRY

from shared.group_commit import GroupCommit
from shared.testing import eventually

LINGER_S = 0.001


class FakeGroups:
    """A group writer held until released: the group sizes written, the most at once."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.in_flight = 0
        self.most_at_once = 0
        self.release = asyncio.Event()

    async def __call__(self, group: Sequence[str]) -> list[str] | None:
        self.sizes.append(len(group))
        self.in_flight += 1
        self.most_at_once = max(self.most_at_once, self.in_flight)
        await self.release.wait()
        self.in_flight -= 1
        return [f"{item}:together" for item in group]

    async def alone(self, item: str) -> str:
        """What a group of one (or an item of a group written one by one) takes."""
        self.sizes.append(1)
        await self.release.wait()
        if item.startswith("bad"):
            raise ValueError(item)
        return f"{item}:alone"


def writer(groups: FakeGroups, **kwargs: Any) -> GroupCommit[str, str]:
    options = {"linger_s": LINGER_S, "max_group": 64, "name": "test", **kwargs}
    return GroupCommit(groups, groups.alone, **options)


def counted(name: str, writer: str) -> float:
    """A group commit counter's value for `writer` (`/metrics`)."""
    return REGISTRY.get_sample_value(f"dropship_group_commit_{name}_total", {"writer": writer}) or 0


async def until(condition: Any) -> None:
    async def probe() -> bool:
        return bool(condition())

    await eventually(probe, timeout=10, interval=LINGER_S / 10)


def submit(groups: GroupCommit[str, str], n: int, tag: str) -> list[asyncio.Task[str]]:
    return [asyncio.create_task(groups.submit(f"{tag}{i}")) for i in range(n)]


async def test_one_writer_the_items_arriving_meanwhile_form_one_next_group():
    fake = FakeGroups()
    groups = writer(fake, writers=1, name="one-writer")
    first = submit(groups, 2, "a")
    await until(lambda: fake.sizes == [2])
    later = []
    for burst in range(3):  # three lingers' worth of items while the first group is written
        later += submit(groups, 2, f"b{burst}")
        await until(lambda: not groups._waiting or groups._due)
    assert fake.sizes == [2], "a second group started while the first was written"
    fake.release.set()
    answers = await asyncio.gather(*first, *later)
    assert fake.sizes == [2, 6]
    assert fake.most_at_once == 1
    items = ["a0", "a1", "b00", "b01", "b10", "b11", "b20", "b21"]
    assert answers == [f"{i}:together" for i in items]
    assert (counted("groups", "one-writer"), counted("items", "one-writer")) == (2, 8)


async def test_one_writer_more_than_a_group_waiting_goes_in_full_groups():
    fake = FakeGroups()
    groups = writer(fake, max_group=3, writers=1)
    first = submit(groups, 3, "a")  # a full group goes at once
    await until(lambda: fake.sizes == [3])
    later = submit(groups, 7, "b")
    await until(lambda: len(groups._waiting) == 7)
    fake.release.set()
    answers = await asyncio.gather(*first, *later)
    assert fake.sizes == [3, 3, 3, 1]
    assert fake.most_at_once == 1
    assert answers == [f"a{i}:together" for i in range(3)] + [
        f"b{i}:together" for i in range(6)
    ] + ["b6:alone"]


async def test_without_a_cap_groups_are_written_side_by_side():
    fake = FakeGroups()
    groups = writer(fake)
    first = submit(groups, 2, "a")
    await until(lambda: fake.sizes == [2])
    later = submit(groups, 2, "b")
    await until(lambda: fake.sizes == [2, 2])
    assert fake.most_at_once == 2
    fake.release.set()
    await asyncio.gather(*first, *later)


async def test_drain_writes_what_waits_behind_a_busy_writer():
    fake = FakeGroups()
    groups = writer(fake, linger_s=60.0, max_group=2, writers=1)  # no timer fires in the test
    first = submit(groups, 2, "a")
    await until(lambda: fake.sizes == [2])
    later = submit(groups, 1, "b")
    await until(lambda: len(groups._waiting) == 1)
    drained = asyncio.create_task(groups.drain())
    await until(lambda: groups._due)
    fake.release.set()
    await drained
    assert all(t.done() for t in first + later)
    assert fake.sizes == [2, 1]


async def test_a_group_not_written_together_is_written_one_by_one_each_with_its_answer():
    fake = FakeGroups()
    fake.release.set()

    async def refuse(group: Sequence[str]) -> None:
        fake.sizes.append(len(group))
        return None  # nothing written: one by one decides

    groups = GroupCommit(refuse, fake.alone, linger_s=LINGER_S, max_group=64, name="refused")
    tasks = [asyncio.create_task(groups.submit(i)) for i in ("a", "bad", "c")]
    answers = await asyncio.gather(*tasks, return_exceptions=True)
    assert answers[0] == "a:alone" and answers[2] == "c:alone"
    assert isinstance(answers[1], ValueError) and str(answers[1]) == "bad"
    assert fake.sizes == [3, 1, 1, 1]
    assert counted("one_by_one", "refused") == 1


async def test_an_error_of_the_group_is_every_items_answer():
    async def broken(group: Sequence[str]) -> list[str]:
        raise ConnectionError("commit lost")

    async def alone(item: str) -> str:
        raise AssertionError("a group whose commit may have happened is not written again")

    groups = GroupCommit(broken, alone, linger_s=LINGER_S, max_group=64)
    tasks = [asyncio.create_task(groups.submit(i)) for i in ("a", "b")]
    answers = await asyncio.gather(*tasks, return_exceptions=True)
    assert [type(a) for a in answers] == [ConnectionError, ConnectionError]


@pytest.mark.parametrize("linger_s", [0.0, LINGER_S])
async def test_an_item_alone_is_written_alone(linger_s):
    fake = FakeGroups()
    fake.release.set()
    groups = writer(fake, linger_s=linger_s)
    assert await groups.submit("x") == "x:alone"
    assert fake.sizes == [1]


async def test_lone_as_group_an_item_alone_goes_to_the_group_write_and_alone_if_refused():
    fake = FakeGroups()
    fake.release.set()
    groups = writer(fake, lone_as_group=True, name="test-lone")
    assert await groups.submit("x") == "x:together"
    assert fake.sizes == [1]

    async def refuse(group: Sequence[str]) -> None:
        fake.sizes.append(len(group))
        return None

    refused = GroupCommit(
        refuse, fake.alone, linger_s=LINGER_S, max_group=64, lone_as_group=True, name="t-lone"
    )
    assert await refused.submit("y") == "y:alone"
    assert fake.sizes == [1, 1, 1]  # the group write refused it, then it went alone


async def test_without_a_linger_items_arriving_together_are_each_written_alone_at_once():
    fake = FakeGroups()
    groups = writer(fake, linger_s=0.0, writers=1, name="test-no-linger")
    pending = [asyncio.create_task(groups.submit(f"i{n}")) for n in range(3)]
    await until(lambda: fake.sizes == [1, 1, 1])  # all three in flight: no group, no cap
    fake.release.set()
    assert await asyncio.gather(*pending) == ["i0:alone", "i1:alone", "i2:alone"]
    assert (counted("groups", "test-no-linger"), counted("items", "test-no-linger")) == (3, 3)
