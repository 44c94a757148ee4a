"""The runner's side of whole-poll transactions, on a fake Kafka consumer: pausing,
lingering, and what a rebalance commits and never applies."""

from __future__ import annotations

import asyncio

from aiokafka import ConsumerRecord, TopicPartition

from shared.bus import BusConfig, KafkaBus
from shared.consumer import ConsumerRunner, RetryingDelivery
from shared.consumer.runner import LINGER_MARGIN_MS
from shared.testing import eventually
from tests.unit.test_poll_batches import placed, setup

TOPIC = "order-placed"


class FakeConsumer:
    """Hands out prepared polls; records pauses, seeks and commits."""

    def __init__(self, *polls: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        self.polls = list(polls)
        self.paused: set[TopicPartition] = set()
        self.commits: list[dict[TopicPartition, int]] = []
        self.seeks: dict[TopicPartition, int] = {}
        self.assigned = {TopicPartition(TOPIC, p) for p in range(8)}
        self.linger_polls: list[int] = []
        self.timeouts: list[int] = []

    async def getmany(self, *, timeout_ms: int, max_records: int):  # type: ignore[no-untyped-def]
        self.timeouts.append(timeout_ms)
        if timeout_ms < 100:
            self.linger_polls.append(max_records)
        return self.polls.pop(0) if self.polls else {}

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def pause(self, tp: TopicPartition) -> None:
        self.paused.add(tp)

    def resume(self, tp: TopicPartition) -> None:
        self.paused.discard(tp)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks[tp] = offset

    def highwater(self, tp: TopicPartition) -> int | None:
        return None

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def records(partition: int, *orders: str) -> dict[TopicPartition, list[ConsumerRecord]]:
    return {
        TopicPartition(TOPIC, partition): [
            ConsumerRecord(TOPIC, partition, i, i, 0, b"", placed(o), None, 0, 0, [])
            for i, o in enumerate(orders)
        ]
    }


def runner_for(delivery: RetryingDelivery, consumer: FakeConsumer, **options) -> ConsumerRunner:  # type: ignore[no-untyped-def]
    bus = KafkaBus(BusConfig("127.0.0.1:1", "test", doorbell=False))
    runner = ConsumerRunner(bus, delivery, idle_after_s=0, **options)
    runner._consumer = consumer  # type: ignore[assignment]
    return runner


async def idle(runner: ConsumerRunner) -> bool:
    return not runner._work


async def test_a_short_poll_lingers_and_goes_in_one_transaction():
    delivery, store, _ = setup(_nothing)
    consumer = FakeConsumer(records(0, "ord_a"), records(3, "ord_b", "ord_c"))
    runner = runner_for(delivery, consumer, batch_size=100, linger_ms=50)
    assert await runner._poll(consumer, 100)  # type: ignore[arg-type]
    assert consumer.linger_polls == [99, 97], "topped up to one batch, until a fetch came empty"
    assert consumer.paused == {TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 3)}
    await eventually(lambda: idle(runner), timeout=5, what="transaction done")
    assert store.commits == 1 and sorted(store.applied) == ["ord_a", "ord_b", "ord_c"]
    assert consumer.paused == set(), "fetched again once done"
    await runner._commit()
    assert consumer.commits == [{TopicPartition(TOPIC, 0): 1, TopicPartition(TOPIC, 3): 2}]


async def test_a_rebalance_commits_finished_work_and_never_applies_a_revoked_partition():
    release = asyncio.Event()

    async def handler(order_id: str) -> None:
        if order_id == "ord_stuck":
            await release.wait()

    delivery, store, _ = setup(handler)
    stuck, quick = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
    consumer = FakeConsumer({**records(0, "ord_stuck"), **records(1, "ord_quick")})
    runner = runner_for(delivery, consumer, batch_size=1, linger_ms=0)  # a lane each
    runner.revoke_grace_s = 0.2
    await runner._poll(consumer, 100)  # type: ignore[arg-type]
    await eventually(lambda: _is(store.applied == ["ord_quick"]), timeout=5, what="quick one")

    await runner.on_revoked({stuck, quick})
    assert consumer.commits == [{quick: 1}], "finished work committed, the stuck one not"
    release.set()  # too late: its transaction was rolled back at the revocation
    await asyncio.sleep(0)
    assert store.applied == ["ord_quick"]
    assert runner._work == {} and runner._done == {}


async def test_a_partition_stuck_in_its_transaction_keeps_the_others_flowing():
    release = asyncio.Event()

    async def handler(order_id: str) -> None:
        if order_id == "ord_stuck":
            await release.wait()

    delivery, store, _ = setup(handler)
    consumer = FakeConsumer(records(0, "ord_stuck"), records(1, "ord_next"))
    runner = runner_for(delivery, consumer, batch_size=100, linger_ms=0)
    await runner._poll(consumer, 100)  # type: ignore[arg-type]
    await runner._poll(consumer, 100)  # type: ignore[arg-type]  # the next poll: partition 1
    await eventually(lambda: _is(store.applied == ["ord_next"]), timeout=5, what="others flow")
    assert consumer.paused == {TopicPartition(TOPIC, 0)}, "only the busy partition waits"
    release.set()
    await eventually(lambda: idle(runner), timeout=5, what="stuck one done")
    assert sorted(store.applied) == ["ord_next", "ord_stuck"] and consumer.paused == set()


async def test_records_held_while_lingering_are_dropped_when_their_partition_is_revoked():
    delivery, store, _ = setup(_nothing)
    consumer = FakeConsumer()
    runner = runner_for(delivery, consumer, batch_size=100, linger_ms=5)
    runner._hold(records(2, "ord_held"))
    await runner.on_revoked({TopicPartition(TOPIC, 2)})
    assert runner._held == {}
    assert not await runner._poll(consumer, 100)  # type: ignore[arg-type]
    assert store.applied == []


async def _nothing(order_id: str) -> None:
    return None


async def _is(value: object) -> object:
    return value


async def test_a_long_linger_asks_for_one_fetch_wait_at_a_time():
    """aiokafka's `getmany` answers only when records arrive or its timeout is up (an
    empty fetch does not wake it): asking for the whole linger would hold a lone event
    that long. Each ask is one fetch wait and a margin, so a quiet wait ends the linger."""
    delivery, store, _ = setup(_nothing)
    consumer = FakeConsumer(records(0, "ord_a"), records(3, "ord_b"))
    runner = runner_for(delivery, consumer, batch_size=100, linger_ms=1000)
    wait = runner.bus.config.fetch_max_wait_ms
    assert await runner._poll(consumer, 100)  # type: ignore[arg-type]
    first_poll, *linger = consumer.timeouts
    assert first_poll == 100
    assert linger == [wait + LINGER_MARGIN_MS] * 2, "one fetch wait per ask, not the whole second"
    await eventually(lambda: idle(runner), timeout=5, what="transaction done")
    assert store.commits == 1 and sorted(store.applied) == ["ord_a", "ord_b"]


async def test_a_linger_stops_asking_once_the_batch_is_full():
    delivery, store, _ = setup(_nothing)
    consumer = FakeConsumer(records(0, "ord_a"), records(3, "ord_b"), records(5, "ord_c"))
    runner = runner_for(delivery, consumer, batch_size=2, linger_ms=50)
    assert await runner._poll(consumer, 100)  # type: ignore[arg-type]
    assert consumer.linger_polls == [1], "full after one top-up: no further fetch"
    await eventually(lambda: idle(runner), timeout=5, what="transaction done")
    assert store.commits == 1 and sorted(store.applied) == ["ord_a", "ord_b"]
