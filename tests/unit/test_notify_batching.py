"""The sender's batching: outcomes finishing together share one write; the hand-off queue."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from services.notify.batcher import Batcher
from services.notify.handoff import HandOff
from services.notify.sender import Sender, Wakeup
from services.notify.settings import NotifySettings
from shared.testing import eventually


class Writes:
    """A fake database: each call is one transaction; it records what each held."""

    def __init__(self, fail: Exception | None = None, delay: float = 0.0) -> None:
        self.calls: list[list[int]] = []
        self.fail = fail
        self.delay = delay

    async def __call__(self, items: Sequence[int]) -> list[str]:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        self.calls.append(list(items))
        return [f"wrote {i}" for i in items]


async def test_items_submitted_within_the_linger_share_one_write() -> None:
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes, linger=0.05)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(5)))
    assert results == [f"wrote {i}" for i in range(5)]  # each gets its own result
    assert writes.calls == [[0, 1, 2, 3, 4]]


async def test_items_further_apart_than_the_linger_are_written_apart() -> None:
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes, linger=0.01)
    assert await batcher.submit(1) == "wrote 1"
    await asyncio.sleep(0.03)
    assert await batcher.submit(2) == "wrote 2"
    assert writes.calls == [[1], [2]]


async def test_a_full_batch_is_written_without_waiting_out_the_linger() -> None:
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes, linger=60.0, max_size=3)
    async with asyncio.timeout(5):
        results = await asyncio.gather(*(batcher.submit(i) for i in range(3)))
    assert results == ["wrote 0", "wrote 1", "wrote 2"]
    assert writes.calls == [[0, 1, 2]]


async def test_more_than_a_batch_is_written_in_batches_of_at_most_max_size() -> None:
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes, linger=0.02, max_size=4)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(10)))
    assert results == [f"wrote {i}" for i in range(10)]
    assert [len(c) for c in writes.calls] == [4, 4, 2]
    assert [i for call in writes.calls for i in call] == list(range(10))


async def test_items_arriving_during_a_write_go_in_the_next_batch() -> None:
    writes = Writes(delay=0.05)
    batcher: Batcher[int, str] = Batcher(writes, linger=0.0)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)  # the first write is under way
    second = asyncio.create_task(batcher.submit(2))
    assert await asyncio.gather(first, second) == ["wrote 1", "wrote 2"]
    assert writes.calls == [[1], [2]]


async def test_a_failed_write_fails_every_item_of_its_batch_and_the_next_batch_works() -> None:
    writes = Writes(fail=ConnectionError("database away"))
    batcher: Batcher[int, str] = Batcher(writes, linger=0.01)
    outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]
    writes.fail = None
    assert await batcher.submit(3) == "wrote 3"
    assert writes.calls == [[3]]


async def test_a_cancelled_submitter_does_not_take_its_item_out_of_the_batch() -> None:
    """The item is another send's batch-mate: the write goes on for the others."""
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes, linger=0.03)
    gone = asyncio.create_task(batcher.submit(1))
    stays = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0)
    gone.cancel()
    assert await stays == "wrote 2"
    assert writes.calls == [[1, 2]]


async def test_close_drops_what_is_not_written_and_writes_nothing() -> None:
    """Stopping drops unwritten outcomes: their sends' leases expire and they go again."""
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes, linger=60.0)
    waiting = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)
    await batcher.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert writes.calls == []


# -- the hand-off queue ------------------------------------------------------------------


def send(n: int) -> Any:
    return SimpleNamespace(id=f"n{n}")


def test_hand_off_room_counts_running_and_waiting_sends() -> None:
    woken: list[bool] = []
    hand_off = HandOff(lambda: woken.append(True), timedelta(seconds=10), capacity=4)
    hand_off.running = lambda: 1
    assert hand_off.room() == 3
    hand_off.give([send(1), send(2)])
    assert woken == [True]
    assert hand_off.room() == 1
    assert [s.id for s in hand_off.take(5)] == ["n1", "n2"]
    assert hand_off.room() == 3


def test_a_disabled_hand_off_has_no_room() -> None:
    hand_off = HandOff(lambda: None, timedelta(seconds=10), capacity=4, enabled=False)
    assert hand_off.room() == 0


def test_take_gives_at_most_the_free_slots_and_keeps_the_rest_claimed() -> None:
    hand_off = HandOff(lambda: None, timedelta(seconds=10), capacity=8)
    hand_off.give([send(i) for i in range(5)])
    assert [s.id for s in hand_off.take(2)] == ["n0", "n1"]
    assert len(hand_off) == 3
    assert [s.id for s in hand_off.take(8)] == ["n2", "n3", "n4"]


def test_a_send_held_half_its_lease_is_left_to_the_lease() -> None:
    """Sending it later could overlap another replica's claim after the lease expires."""
    now = [100.0]
    hand_off = HandOff(lambda: None, timedelta(seconds=10), capacity=8, clock=lambda: now[0])
    hand_off.give([send(1)])
    now[0] += 4.0
    hand_off.give([send(2)])
    now[0] += 2.0  # n1 held 6 s of a 10 s lease, n2 2 s
    assert [s.id for s in hand_off.take(8)] == ["n2"]
    assert hand_off.expired == 1


async def test_sends_handed_to_a_full_sender_wait_for_a_slot_and_need_no_claim(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two slots, five sends handed over at once, the poll an hour away: the three that
    find no slot stay queued (claimed) and go as slots free, without a claim."""
    settings = NotifySettings(data_dir=tmp_path, sender_poll_s=3600.0, sender_concurrency=2)
    wakeup = Wakeup()
    hand_off = HandOff(wakeup.event.set, timedelta(seconds=60), capacity=2)
    gate = asyncio.Event()
    finished: list[str] = []
    claims: list[int] = []

    async def claim(limit: int) -> list[Any]:
        claims.append(limit)
        return []

    async def ops(one: Any) -> None:
        await gate.wait()

    async def finish(one: Any, status: Any, **_: Any) -> None:
        finished.append(one.id)

    async with httpx.AsyncClient() as http:
        sender = Sender(lambda: None, settings, http, None, wakeup, hand_off=hand_off)  # type: ignore[arg-type]
        monkeypatch.setattr(sender, "_claim", claim)
        monkeypatch.setattr(sender, "_ops", ops)
        monkeypatch.setattr(sender, "_finish", finish)
        running = asyncio.create_task(sender.run())
        try:
            await eventually(lambda: _true(claims == [2]), timeout=5, what="the start-up claim")
            hand_off.give(
                [SimpleNamespace(id=f"n{i}", recipient_kind="ops", order_id=None) for i in range(5)]
            )
            await eventually(lambda: _true(len(sender._inflight) == 2), timeout=5, what="2 sends")
            assert len(hand_off) == 3  # no slot yet: still claimed, in memory
            gate.set()
            await eventually(lambda: _true(len(finished) == 5), timeout=5, what="all five sent")
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
    assert sorted(finished) == [f"n{i}" for i in range(5)]
    assert claims == [2], "handed sends need no claim"


async def _true(value: bool) -> bool:
    return value
