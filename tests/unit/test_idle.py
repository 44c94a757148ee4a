"""The idle gate, the doorbell, the poll backoff and the alarm: when a consumer may sleep,
what wakes it, how often a process rings, how polls stretch and snap back, how long a
clock-driven loop sleeps."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

from aiokafka import TopicPartition

from shared.bus import DOORBELL_TOPIC, BusConfig, KafkaBus, OutgoingMessage
from shared.idle import Alarm, Backoff, Doorbell, IdleGate
from shared.testing import eventually

TP = [TopicPartition("order-placed", p) for p in range(3)]


class FakeConsumer:
    def __init__(self) -> None:
        self.paused: set[TopicPartition] = set()
        self.ever_paused: set[TopicPartition] = set()

    def assignment(self) -> set[TopicPartition]:
        return set(TP)

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)
        self.ever_paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)


class PeekedConsumer(FakeConsumer):
    """Answers peeks: every partition's end offset, and the consumer's positions."""

    def __init__(self) -> None:
        super().__init__()
        self.ends = dict.fromkeys(TP, 7)
        self.peeked = 0

    async def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        self.peeked += 1
        return {tp: self.ends[tp] for tp in tps}

    async def position(self, tp: TopicPartition) -> int:
        return 7


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_backoff_doubles_while_idle_and_snaps_back() -> None:
    poll = Backoff(1.0, 8)
    assert [poll.found(False) for _ in range(5)] == [2.0, 4.0, 8.0, 8.0, 8.0]
    assert poll.found(True) == 1.0
    poll.found(False)
    poll.woken()
    assert poll.current_s == 1.0
    assert Backoff(0.5, 1).found(False) == 0.5  # factor 1: never longer


def test_gate_sleeps_only_after_the_quiet_spell() -> None:
    clock = Clock()
    gate = IdleGate(None, idle_after_s=3, peek_s=5, clock=clock)
    clock.now = 2.9
    assert not gate.should_sleep()
    clock.now = 3.0
    assert gate.should_sleep()
    gate.active()
    assert not gate.should_sleep()
    assert not IdleGate(None, idle_after_s=0, peek_s=5, clock=clock).should_sleep()


async def test_a_ring_wakes_the_sleeping_consumer_and_resumes_its_partitions() -> None:
    bell = Doorbell(bus=None)  # type: ignore[arg-type]  # run() is not started here
    gate = IdleGate(bell, idle_after_s=0.01, peek_s=60)
    consumer = FakeConsumer()
    sleeping = asyncio.create_task(gate.sleep(consumer, busy={TP[0]}))  # type: ignore[arg-type]

    async def asleep() -> bool:
        return gate.asleep

    await eventually(asleep, timeout=1, interval=0.001, what="the gate asleep")
    assert consumer.paused == {TP[1], TP[2]}  # a busy partition is the runner's to resume
    bell.rung.set()
    await asyncio.wait_for(sleeping, 1)
    assert consumer.paused == set() and not gate.should_sleep()


async def test_without_a_ring_the_peek_ends_the_sleep() -> None:
    gate = IdleGate(None, idle_after_s=0.01, peek_s=0.05)
    consumer = FakeConsumer()
    await asyncio.wait_for(gate.sleep(consumer, busy=set()), 1)  # type: ignore[arg-type]
    assert consumer.ever_paused == set(TP) and consumer.paused == set()


async def test_a_peek_that_finds_nothing_keeps_the_partitions_paused() -> None:
    gate = IdleGate(None, idle_after_s=0.01, peek_s=0.01)
    consumer = PeekedConsumer()
    sleeping = asyncio.create_task(gate.sleep(consumer, busy=set()))  # type: ignore[arg-type]

    async def peeked_twice() -> bool:
        return consumer.peeked >= 2

    await eventually(peeked_twice, timeout=1, interval=0.001, what="two peeks")
    assert gate.asleep and consumer.paused == set(TP), "no fetch: nothing arrived"
    consumer.ends[TP[2]] = 8  # published without a ring
    await asyncio.wait_for(sleeping, 1)
    assert consumer.paused == set()


async def test_the_runner_fetches_anyway_every_fetch_every_s() -> None:
    gate = IdleGate(None, idle_after_s=0.01, peek_s=0.01, fetch_every_s=0.05)
    consumer = PeekedConsumer()
    await asyncio.wait_for(gate.sleep(consumer, busy=set()), 1)  # type: ignore[arg-type]
    assert consumer.paused == set() and gate.peeks >= 2


async def test_a_ring_heard_while_awake_skips_the_next_sleep() -> None:
    bell = Doorbell(bus=None)  # type: ignore[arg-type]
    bell.rung.set()
    gate = IdleGate(bell, idle_after_s=0.01, peek_s=60)
    consumer = FakeConsumer()
    await asyncio.wait_for(gate.sleep(consumer, busy=set()), 1)  # type: ignore[arg-type]
    assert consumer.ever_paused == set() and not bell.rung.is_set()


async def test_a_ring_heard_while_awake_keeps_the_consumer_awake_for_the_quiet_spell() -> None:
    # a process rings at most every quarter of `idle_after_s`: a consumer that heard a ring
    # must stay awake for the batches published after it without a ring of their own
    clock = Clock()
    bell = Doorbell(bus=None)  # type: ignore[arg-type]
    gate = IdleGate(bell, idle_after_s=3, peek_s=60, clock=clock)
    clock.now = 10.0
    assert gate.should_sleep()
    bell.rung.set()
    await asyncio.wait_for(gate.sleep(FakeConsumer(), busy=set()), 1)  # type: ignore[arg-type]
    clock.now = 12.9
    assert not gate.should_sleep(), "awake for idle_after_s after the ring"
    clock.now = 13.0
    assert gate.should_sleep()


class FakeProducer:
    """What `KafkaBus.send_batch` and its ring need of aiokafka's producer."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, topic: str, value: bytes, **_: object) -> asyncio.Future[None]:
        self.sent.append(topic)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_process_rings_at_most_once_per_ring_interval() -> None:
    clock = Clock()
    bus = KafkaBus(BusConfig("127.0.0.1:1", "order", ring_every_s=0.75), clock=clock)
    producer = bus._producer = FakeProducer()  # type: ignore[assignment]
    event = [OutgoingMessage("order-placed", b"ord_1", b"{}")]

    async def rings() -> int:
        await asyncio.gather(*bus._rings)
        return producer.sent.count(DOORBELL_TOPIC)

    for clock.now in (100.0, 100.2, 100.74):  # batches close together: the first rings
        await bus.send_batch(event)
    assert await rings() == 1
    await bus.send_batch([OutgoingMessage("order-placed.dlq", b"ord_1", b"{}")])
    clock.now = 100.75
    await bus.send_batch([OutgoingMessage("order-placed.dlq", b"ord_1", b"{}")])
    assert await rings() == 1, "a dead letter wakes no consumer"
    await bus.send_batch(event)
    assert await rings() == 2, "the interval is up: the next batch rings at once"
    assert producer.sent.count("order-placed") == 4 and bus.rings == 2


async def test_with_no_ring_interval_every_batch_rings() -> None:
    bus = KafkaBus(BusConfig("127.0.0.1:1", "order"))
    producer = bus._producer = FakeProducer()  # type: ignore[assignment]
    for _ in range(3):
        await bus.send_batch([OutgoingMessage("order-placed", b"ord_1", b"{}")])
    await asyncio.gather(*bus._rings)
    assert producer.sent.count(DOORBELL_TOPIC) == 3


NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def test_an_alarm_sleeps_until_the_next_due_time_within_its_bounds() -> None:
    clock = Clock()
    alarm = Alarm(1.0, 60.0, clock=clock, now=lambda: NOW)
    clock.now = 0.2  # the round took 0.2 s
    assert alarm.wait_s(None) == 59.8, "nothing pending: the safety net"
    assert alarm.wait_s(NOW + timedelta(seconds=7)) == 7.0
    assert alarm.wait_s(NOW + timedelta(hours=1)) == 59.8
    assert alarm.wait_s(NOW + timedelta(seconds=0.3)) == 0.8, "never sooner than min_s"
    assert alarm.wait_s(NOW - timedelta(seconds=5)) == 0.8, "overdue: as soon as allowed"
    clock.now = 3.0
    assert alarm.wait_s(NOW - timedelta(seconds=5)) == 0.0


async def test_a_wake_ends_a_long_sleep_and_one_before_it_is_not_lost() -> None:
    alarm = Alarm(0.01, 60.0)
    sleeping = asyncio.create_task(alarm.sleep(None))
    await asyncio.sleep(0)  # it is waiting now (a wake is an event, not a poll)
    alarm.wake()
    await asyncio.wait_for(sleeping, 1)
    alarm.wake()  # work committed while the loop ran its round
    await asyncio.wait_for(alarm.sleep(NOW + timedelta(hours=1)), 1)
    assert alarm.rounds == 2


async def test_a_wake_is_held_back_until_min_s_after_the_last_round() -> None:
    alarm = Alarm(0.2, 60.0)
    alarm.wake()
    started = time.monotonic()
    await asyncio.wait_for(alarm.sleep(None), 1)
    assert time.monotonic() - started >= 0.15, "no more often than every min_s"
