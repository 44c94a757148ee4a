"""Background loops beside the sender: escalation of unacknowledged alerts, lines waiting
too long for a supplier, and the DLQ watch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.notify.handlers import alerts
from services.notify.store import NotifyUnitOfWork
from shared.bus import DLQ_SUFFIX, EVENT_TOPICS, start_or_close
from shared.runtime import ServiceRuntime

log = logging.getLogger(__name__)


async def escalation_loop(uows: Callable[[], NotifyUnitOfWork], interval_s: float) -> None:
    while True:
        await alerts.escalate_overdue(uows())
        await asyncio.sleep(interval_s)


async def waiting_loop(
    uows: Callable[[], NotifyUnitOfWork], interval_s: float, after: timedelta
) -> None:
    """Page ops once when order lines wait for a supplier longer than `after`."""
    while True:
        try:
            await alerts.waiting_too_long(uows(), after)
        except Exception:
            log.exception("waiting-lines scan failed; trying again")
        await asyncio.sleep(interval_s)


async def read_dlq_depths(consumer: AIOKafkaConsumer) -> dict[str, alerts.DlqReading]:
    """Messages currently held by each `<topic>.dlq` (end minus beginning offsets) and
    letters ever written to it (end offsets)."""
    topics = [topic + DLQ_SUFFIX for topic in EVENT_TOPICS]
    await consumer._client.force_metadata_update()
    partitions = [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]
    if not partitions:
        return {}
    ends = await consumer.end_offsets(partitions)
    starts = await consumer.beginning_offsets(partitions)
    depths: dict[str, int] = {}
    written: dict[str, int] = {}
    for tp in partitions:
        depths[tp.topic] = depths.get(tp.topic, 0) + ends[tp] - starts[tp]
        written[tp.topic] = written.get(tp.topic, 0) + ends[tp]
    return {topic: alerts.DlqReading(depths[topic], written[topic]) for topic in depths}


async def dlq_watch(runtime: ServiceRuntime[NotifyUnitOfWork], interval_s: float) -> None:
    """Alert when a dead-letter queue grows."""
    await runtime.bus.wait_connected()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=runtime.settings.kafka_bootstrap, enable_auto_commit=False
    )
    await start_or_close(consumer)
    try:
        while True:
            try:
                depths = await read_dlq_depths(consumer)
            except Exception:
                log.warning("could not read DLQ depths", exc_info=True)
            else:
                await alerts.record_dlq_depths(runtime.uow(), depths)
            await asyncio.sleep(interval_s)
    finally:
        await consumer.stop()
