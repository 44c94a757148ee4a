"""A supplier that keeps failing for a while leaves lines waiting, never failed."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer

from shared.events import Envelope
from tests.support.kafka import consume, publish_envelopes
from tests.support.supplier import add_supplier, control, placed, states


@pytest.fixture
async def patient(supplier_with):
    """The supplier service with few retries per call, quick waiting retries and a breaker
    that cools down in a second."""
    async with supplier_with(
        supplier_timeout_s=1.0,
        supplier_backoff_s=0.02,
        supplier_max_attempts=2,
        breaker_cooldown_s=1.0,
        supplier_retry_waiting_s=0.2,
        supplier_retry_waiting_max_s=1.0,
    ) as svc:
        yield svc


async def _topic_records(bootstrap: str, topic: str) -> list:
    """Everything on `topic` so far (an empty topic answers an empty list)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        records: list = []
        for _ in range(3):  # a few polls: partitions are assigned on the first
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await consumer.stop()


async def test_a_supplier_failing_half_its_calls_leaves_no_order_failed(patient, broker):
    await add_supplier(patient, "flaky", offers=[("MUG", "4.00", 1000, 24)])
    await control(patient, "flaky", fail_http_rate=0.5)
    orders = [placed(("MUG", 1, "12.50")) for _ in range(12)]
    await publish_envelopes(broker.bootstrap, orders)

    waiting = await consume(broker.bootstrap, "order-lines-waiting", 1, within=60)
    assert Envelope.from_bytes(waiting[0].value).data["reason"] in (
        "server_error",
        "breaker_open",
    )
    await asyncio.gather(*(states(patient, o.subject, "accepted") for o in orders))
    assert await _topic_records(broker.bootstrap, "order-routing-failed") == []
