"""Kafka in a benchmark: a fresh broker with its topics, joining a group, paced publishing."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.harness.clock import paced, perf
from shared.bus import BusConfig, ensure_topics
from shared.infra import EmbeddedBroker

PARTITIONS = 8


@contextlib.asynccontextmanager
async def broker(
    topics: Iterable[str], log: Path | None = None, partitions: int = PARTITIONS
) -> AsyncIterator[EmbeddedBroker]:
    """A fresh embedded tansu broker with `topics` created, stopped afterwards."""
    embedded = EmbeddedBroker(log_path=log).start()
    try:
        config = BusConfig(
            bootstrap=embedded.bootstrap, client_id="bench-admin", partitions=partitions
        )
        await ensure_topics(config, tuple(topics))
        yield embedded
    finally:
        embedded.stop()


def broker_pid(embedded: EmbeddedBroker) -> int | None:
    return embedded.process.pid if embedded.process else None


async def join(consumer: AIOKafkaConsumer, within: float = 60.0, name: str = "bench") -> float:
    """Start the consumer and wait until it holds partitions (~3 s on tansu); the seconds."""
    t0 = perf()
    await consumer.start()
    while not consumer.assignment():
        await consumer.getmany(timeout_ms=200)
        if perf() - t0 > within:
            raise RuntimeError(f"{name} consumer got no partitions within {within:.0f} s")
    return perf() - t0


async def publish_paced(
    producer: AIOKafkaProducer, topic: str, messages: Sequence[tuple[bytes, bytes]], rate: float
) -> tuple[list[float], list[float]]:
    """Send message i at start + i/rate whatever happened before (open model), then wait
    for every acknowledgement; (due perf_counter time, lateness in seconds) per message."""
    due_at: list[float] = []
    late: list[float] = []
    futures = []
    async for i, due in paced(len(messages), rate):
        due_at.append(due)
        late.append(perf() - due)
        key, value = messages[i]
        futures.append(await producer.send(topic, value, key=key))
    await asyncio.gather(*futures)
    return due_at, late


async def publish_all(
    producer: AIOKafkaProducer, topic: str, messages: Sequence[tuple[bytes, bytes]]
) -> list[float]:
    """Send every message as fast as the producer takes them; the send time of each."""
    sent: list[float] = []
    futures = []
    for key, value in messages:
        sent.append(perf())
        futures.append(await producer.send(topic, value, key=key))
    await asyncio.gather(*futures)
    return sent
