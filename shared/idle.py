"""Idle consumers cost nothing: pause fetching when quiet, wake on the broker's doorbell.

The embedded broker (tansu) answers a fetch by re-reading every partition in it a few
times per `fetch_max_wait_ms`, so a consumer that long-polls 100+ partitions costs the
broker a steady share of a core even with no message anywhere. `IdleGate` lets a
`ConsumerRunner` stop fetching once nothing has arrived for `idle_after_s`: it pauses every
assigned partition and waits for either

- a ring on the doorbell topic (one partition, one empty message that every `KafkaBus`
  publishes after a batch of events is acknowledged, read here from its end by a consumer
  outside any group), or
- a peek every `peek_s` finding a message: one ListOffsets request compares the paused
  partitions' end offsets with the consumer's positions, so a message published without
  a ring (another producer, a ring lost in a crash) is still picked up, at most `peek_s`
  late, without resuming 100+ partitions for a fetch each time (which cost the broker
  more than everything else an idle stack does), or
- `fetch_every_s` passing: the runner fetches anyway, as before every peek.

Either way the partitions are resumed and the runner polls normally again (after a ring
for at least `idle_after_s`, as more events usually follow: a process rings at most every
quarter of that, so the batches it publishes meanwhile go to consumers still awake); the gate only
ever delays a fetch, it never skips one, so every delivery guarantee of the runner holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaError

if TYPE_CHECKING:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from shared.bus import KafkaBus

log = logging.getLogger(__name__)


class Doorbell:
    """Sets `rung` whenever a ring arrives; retries quietly while the broker is away."""

    def __init__(self, bus: KafkaBus) -> None:
        self.bus = bus
        self.rung = asyncio.Event()

    async def run(self) -> None:
        delay = 0.5
        while True:
            listener = self.bus.doorbell_listener()
            try:
                await listener.start()
                delay = 0.5
                while True:
                    if await listener.getmany(timeout_ms=5000):
                        self.rung.set()
            except (KafkaError, OSError) as exc:  # peeking still picks everything up
                log.info("doorbell unavailable, peeking only", extra={"error": repr(exc)})
            finally:
                with contextlib.suppress(Exception):
                    await listener.stop()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


class IdleGate:
    """Decides when a consumer may stop fetching, and sleeps it until work may be there."""

    def __init__(
        self,
        doorbell: Doorbell | None,
        *,
        idle_after_s: float,
        peek_s: float,
        fetch_every_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.doorbell = doorbell
        self.idle_after_s = idle_after_s
        self.peek_s = peek_s
        self.fetch_every_s = fetch_every_s
        self.clock = clock
        self._last_active = clock()
        self.sleeps = 0
        self.peeks = 0
        self.asleep = False

    def active(self) -> None:
        """Records arrived or work is in flight."""
        self._last_active = self.clock()

    def should_sleep(self) -> bool:
        return self.idle_after_s > 0 and self.clock() - self._last_active >= self.idle_after_s

    async def sleep(self, consumer: AIOKafkaConsumer, busy: set[TopicPartition]) -> None:
        """Pause the idle partitions until a ring, or a peek that finds a message, or
        `fetch_every_s`, then resume them.

        A ring heard before this call (while the last poll ran) returns at once: the ring
        follows its batch's acknowledgement, so the next poll sees that batch; and, as after
        a ring heard asleep, the consumer stays awake for `idle_after_s`, since a process
        rings at most once in a while (`BusConfig.ring_every_s`, shorter than that) and
        relies on the consumers its last ring woke to fetch the batches after it. A peek asks
        the broker for the partitions' end offsets (one small request) instead of fetching
        them all; at least every `fetch_every_s` the runner fetches anyway (and so stays
        well inside aiokafka's `max_poll_interval_ms`)."""
        rung = self.doorbell.rung if self.doorbell is not None else asyncio.Event()
        if rung.is_set():  # as after a ring heard asleep: stay awake for what follows it
            rung.clear()
            self.active()
            return
        assigned = consumer.assignment()
        paused = [tp for tp in assigned if tp not in busy]
        for tp in paused:
            consumer.pause(tp)
        self.sleeps += 1
        self.asleep = True
        started = self.clock()
        try:
            while True:
                with contextlib.suppress(TimeoutError):  # 3.11 wait_for can lose a cancel
                    async with asyncio.timeout(self.peek_s):
                        await rung.wait()
                if rung.is_set():  # events are flowing: stay awake for what follows them
                    rung.clear()
                    self.active()
                    return
                self.peeks += 1
                if self.clock() - started >= self.fetch_every_s:
                    return
                if await _arrived(consumer, assigned, paused):
                    return
        finally:
            self.asleep = False
            assigned = consumer.assignment()
            for tp in paused:
                if tp in assigned:
                    consumer.resume(tp)


async def _arrived(
    consumer: AIOKafkaConsumer, assigned: set[TopicPartition], paused: list[TopicPartition]
) -> bool:
    """Whether a paused partition holds a message past the consumer's position, or the
    assignment changed (when in doubt: yes, the runner fetches)."""
    if consumer.assignment() != assigned:
        return True
    if not paused:
        return False
    try:
        async with asyncio.timeout(5.0):
            ends = await consumer.end_offsets(paused)
            for tp in paused:
                if ends.get(tp, 0) > await consumer.position(tp):
                    return True
    except Exception as exc:  # a rebalance, the broker away: let the runner fetch
        log.debug("peek failed, fetching instead", extra={"error": repr(exc)})
        return True
    return False


class Backoff:
    """The wait of a polling loop that also wakes on an event: `base_s` while it finds work,
    doubling after each empty poll up to `base_s * max_factor` (1: never longer).

    Only the safety-net poll slows down: an in-process wake-up still ends the wait at
    once, so work written in the process is picked up as fast as before, and work that
    becomes due by the clock alone is at most `base_s * max_factor` late when idle."""

    def __init__(self, base_s: float, max_factor: float = 8.0) -> None:
        self.base_s = base_s
        self.max_s = base_s * max(1.0, max_factor)
        self.current_s = base_s

    def found(self, work: bool) -> float:
        """Record one poll's result; the wait before the next one."""
        self.current_s = self.base_s if work else min(self.current_s * 2, self.max_s)
        return self.current_s

    def woken(self) -> None:
        self.current_s = self.base_s


class Alarm:
    """The sleep of a clock-driven loop whose work is due at times kept in the database.

    After each round the loop reads the earliest due time and sleeps until then, but at
    least `min_s` after the last round began (it never polls more often than every
    `min_s`, as before) and at most `max_s` (a safety net for work nobody woke it for:
    written by another process or by hand). `wake()`, called once a transaction that
    created work or brought it forward has committed, ends the sleep as soon as `min_s`
    has passed since the last round, so work written in the process is picked up as
    fast as it was by a poll every `min_s`, and an idle loop costs one round per `max_s`.
    """

    def __init__(
        self,
        min_s: float,
        max_s: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.min_s = min_s
        self.max_s = max(min_s, max_s)
        self.clock = clock
        self.now = now
        self.rounds = 0
        self._woken = asyncio.Event()
        self._round_at = clock()

    def wake(self) -> None:
        """Work was committed: run the next round soon (safe from any task, any time)."""
        self._woken.set()

    def wait_s(self, due: datetime | None) -> float:
        """How long to sleep from now before the next round, with `due` the earliest due
        time the database holds (None: nothing pending)."""
        since = self.clock() - self._round_at
        until_due = self.max_s if due is None else (due - self.now()).total_seconds()
        return max(self.min_s - since, min(until_due, self.max_s - since), 0.0)

    async def sleep(self, due: datetime | None) -> None:
        """Sleep until the next round (see the class); a wake before this call counts."""
        if not self._woken.is_set():
            with contextlib.suppress(TimeoutError):  # 3.11 wait_for can lose a cancel
                async with asyncio.timeout(self.wait_s(due)):
                    await self._woken.wait()
        if self._woken.is_set():  # woken: but not sooner than `min_s` after the last round
            await asyncio.sleep(max(self.min_s - (self.clock() - self._round_at), 0.0))
        self._woken.clear()
        self._round_at = self.clock()
        self.rounds += 1
