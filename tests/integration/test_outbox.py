"""Outbox relay and bus behaviour against the real broker and real databases."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from shared.bus import BusConfig, KafkaBus, OutgoingMessage, ensure_topics
from shared.consumer import ConsumerRunner, MessageProcessor, RetryingDelivery, on, subscriptions
from shared.db import create_engine, new_metadata, session_factory
from shared.events import OrderCancelled
from shared.outbox import OutboxRelay
from shared.testing import eventually
from shared.uow import UnitOfWork
from tests.support.kafka import GROUP_TIMING


async def _database(url: str):
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(new_metadata().create_all)
    return engine, session_factory(engine)


async def _start_consumer(bus: KafkaBus, handler, group: str = "probe", tmp_db=None):
    _, sessions = tmp_db
    processor = MessageProcessor(group, handler, lambda: UnitOfWork(sessions))
    runner = ConsumerRunner(bus, RetryingDelivery(processor, bus))
    task = asyncio.create_task(runner.run())
    await eventually(lambda: _value(runner.assigned), what="partitions assigned")
    return task


async def _value(v):
    return v


async def test_events_of_one_order_arrive_in_commit_order(database_url, broker):
    producer_engine, producer_sessions = await _database(await database_url("producer"))
    consumer_db = await _database(await database_url("consumer"))
    bus = KafkaBus(BusConfig(broker.bootstrap, "test", **GROUP_TIMING))
    await bus.connect()
    relay = OutboxRelay("producer", producer_engine, producer_sessions, bus, batch_size=7)
    seen: list[str] = []

    async def record(envelope, data, uow):
        seen.append(data.reason)

    consumer = await _start_consumer(
        bus, subscriptions(on(OrderCancelled, record)), tmp_db=consumer_db
    )
    relay_task = asyncio.create_task(relay.run())
    try:
        expected = [f"step-{i:02d}" for i in range(40)]
        for reason in expected:  # one transaction per event, as separate requests would
            async with UnitOfWork(producer_sessions, on_commit=relay.wake) as uow:
                uow.emit(OrderCancelled(order_id="ord_sequence", reason=reason))
                await uow.commit()
        await eventually(lambda: _value(len(seen) >= len(expected)), what="all events consumed")
        assert seen == expected
        assert await relay.backlog() == 0
    finally:
        for task in (consumer, relay_task):
            task.cancel()
        await asyncio.gather(consumer, relay_task, return_exceptions=True)
        await bus.close()
        await producer_engine.dispose()
        await consumer_db[0].dispose()


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_commit_in_another_process_wakes_the_relay_through_notify(database_url, broker):
    url = await database_url("producer")
    engine, sessions = await _database(url)
    other_engine = create_engine(url)  # another replica: its commits cannot call our wake()
    bus = KafkaBus(BusConfig(broker.bootstrap, "test", **GROUP_TIMING))
    await bus.connect()
    relay = OutboxRelay("producer", engine, sessions, bus, poll_interval=300)
    relay_task = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _relay_idle(relay), what="relay listening")
        async with UnitOfWork(session_factory(other_engine)) as uow:
            uow.emit(OrderCancelled(order_id="ord_wake", reason="customer asked"))
            await uow.commit()
        # the relay polls only every 300 s: only NOTIFY can make this prompt
        await eventually(lambda: _value(relay.published_total == 1), timeout=10, what="published")
    finally:
        relay_task.cancel()
        await asyncio.gather(relay_task, return_exceptions=True)
        await bus.close()
        await engine.dispose()
        await other_engine.dispose()


async def _relay_idle(relay: OutboxRelay) -> bool:
    return relay.leading


async def test_only_one_relay_publishes_and_a_standby_takes_over(database_url, broker, backend):
    url = await database_url("producer")
    engine, sessions = await _database(url)
    bus = KafkaBus(BusConfig(broker.bootstrap, "test", **GROUP_TIMING))
    await bus.connect()
    first = OutboxRelay("producer", engine, sessions, bus, poll_interval=0.2)
    second_engine = create_engine(url)
    second = OutboxRelay(
        "producer", second_engine, session_factory(second_engine), bus, poll_interval=0.2
    )
    first_task = asyncio.create_task(first.run())
    await eventually(lambda: _relay_idle(first), what="first relay leads")
    second_task = asyncio.create_task(second.run())
    try:
        await _emit(sessions, "ord_a")
        await eventually(lambda: _value(first.published_total == 1))
        assert not second.leading and second.published_total == 0

        first_task.cancel()  # the leader dies; the standby must take over
        await asyncio.gather(first_task, return_exceptions=True)
        await _emit(sessions, "ord_b")
        await eventually(
            lambda: _value(second.published_total == 1), timeout=20, what="standby publishes"
        )
    finally:
        second_task.cancel()
        await asyncio.gather(second_task, return_exceptions=True)
        await bus.close()
        await engine.dispose()
        await second_engine.dispose()


async def _emit(sessions, order_id: str) -> None:
    async with UnitOfWork(sessions) as uow:
        uow.emit(OrderCancelled(order_id=order_id, reason="test"))
        await uow.commit()


async def test_keyed_messages_share_a_partition_on_the_shared_broker(session_broker_bootstrap):
    bootstrap = session_broker_bootstrap
    topic = f"keyed-{uuid.uuid4().hex[:8]}"
    config = BusConfig(bootstrap, "test", partitions=8)
    await ensure_topics(config, [topic])
    await ensure_topics(config, [topic])  # idempotent
    bus = KafkaBus(config)
    await bus.connect(topics=[topic])
    try:
        await bus.send_batch(
            [OutgoingMessage(topic, f"ord_{i % 3}".encode(), str(i).encode()) for i in range(30)]
        )
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            got: dict[bytes, list[tuple[int, int]]] = {}
            while sum(len(v) for v in got.values()) < 30:
                for records in (await consumer.getmany(timeout_ms=1000)).values():
                    for r in records:
                        got.setdefault(r.key, []).append((r.partition, int(r.value)))
        finally:
            await consumer.stop()
        assert len(await bus_partitions(bus, topic)) == 8
        for key, items in got.items():
            assert len({p for p, _ in items}) == 1, f"{key!r} spread over partitions"
            assert [v for _, v in items] == sorted(v for _, v in items), "order kept per key"
    finally:
        await bus.close()


async def bus_partitions(bus: KafkaBus, topic: str) -> set[int]:
    assert bus._producer is not None
    return set(await bus._producer.partitions_for(topic))
