"""Raw Kafka access for tests: publish exactly the bytes a test wants on a topic."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import REGISTRY

from shared.events import Envelope

GROUP_TIMING = {"session_timeout_ms": 2000, "heartbeat_interval_ms": 300}
"""Consumer group timing for everything the tests start. A group join on tansu takes about
half the session timeout, counted in whole seconds (3 s at the production 6 s, 1 s at
2 s), and a member that vanished without leaving is noticed after the whole timeout."""

FETCH_WAITS_MS = {"order": 100, "notify": 100, "metrics": 250}
"""Fetch waits of the consumers whose fetches the broker holds, for everything the tests
start (`make up` stacks excepted: they take the defaults, 500, 500 and 1000 ms). A test
walks an order through its hops one event at a time, and each hop to these consumers
waits up to a whole fetch wait plus a linger; the longer defaults save the broker CPU
while events trickle in steadily, which `bench stack` measures, not a test."""


async def publish_raw(bootstrap: str, topic: str, values: list[bytes], key: bytes = b"k") -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def publish_envelopes(bootstrap: str, envelopes: list[Envelope]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for e in envelopes:
            await producer.send_and_wait(e.type, e.to_bytes(), key=e.key)
    finally:
        await producer.stop()


async def partition_count(bootstrap: str, topic: str) -> int:
    """How many partitions the broker says `topic` has (0: it does not know the topic)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster metadata
        return len(consumer.partitions_for_topic(topic) or ())
    finally:
        await consumer.stop()


def consumed(group: str, topic: str, outcome: str) -> float:
    """How many events this process's consumers counted with the given outcome."""
    value = REGISTRY.get_sample_value(
        "dropship_events_consumed_total", {"group": group, "topic": topic, "outcome": outcome}
    )
    return value or 0.0


async def consume(bootstrap: str, topic: str, count: int, within: float = 30.0) -> list:
    """Read `count` records from the start of `topic` (no consumer group), within a deadline."""
    import asyncio

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    records: list = []
    try:
        async with asyncio.timeout(within):
            while len(records) < count:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    records.extend(batch)
    finally:
        await consumer.stop()
    return records
