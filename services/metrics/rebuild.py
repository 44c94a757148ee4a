"""Rebuild the KPI facts by replaying every event topic from the beginning.

    python -m services.metrics.rebuild [--reset] [--database-url URL] [--bootstrap HOST:PORT]

Reads each partition of every event topic from offset 0 until it has caught up with
the partition's high watermark (no consumer group: the live service's offsets are
untouched) and applies the
events through the same inbox and batch handler as the live consumer, so the facts,
and the KPIs computed from them, come out exactly the same. `--reset` first empties the
facts and the metrics inbox in one transaction (stop the service first, or rebuild
into a fresh database and point the service at it). Messages that cannot be applied
were dead-lettered by the live consumer already; here they are counted and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from services.metrics import handlers
from services.metrics.app import MIGRATIONS
from services.metrics.consumers import BATCH, CONSUMERS
from services.metrics.settings import MetricsSettings
from services.metrics.store import MetricsUnitOfWork
from shared.bus import EVENT_TOPICS, OutgoingMessage
from shared.consumer import MessageProcessor, RetryingDelivery
from shared.db import create_engine, is_sqlite, migrate_async, session_factory
from shared.runtime import young_threshold

log = logging.getLogger(__name__)


@dataclass
class RebuildStats:
    read: int = 0
    applied: int = 0
    duplicates: int = 0
    skipped: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.read / self.seconds if self.seconds else 0.0


class _Skipped:
    """Stands in for the DLQ: the live consumer has dead-lettered these already."""

    def __init__(self) -> None:
        self.count = 0

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        self.count += len(messages)


async def rebuild(
    settings: MetricsSettings,
    *,
    reset: bool = False,
    batch_size: int | None = None,
    concurrency: int | None = None,
) -> RebuildStats:
    """Replay every event topic into `settings`' database; returns what was done.

    `concurrency` transactions run at once (default: 1 on SQLite, which has one writer,
    4 on PostgreSQL); facts do not depend on the order they are written in.
    """
    started = time.perf_counter()
    engine = create_engine(settings.db_url)
    sessions = session_factory(engine)
    skipped = _Skipped()
    stats = RebuildStats()
    try:
        if settings.migrate_on_start:
            await migrate_async(MIGRATIONS, settings.db_url)
        if reset:
            await handlers.reset(settings.service_name, MetricsUnitOfWork(sessions))
        processor = MessageProcessor(
            settings.service_name,
            CONSUMERS,
            lambda: MetricsUnitOfWork(sessions),
            batch_handler=BATCH,
        )
        delivery = RetryingDelivery(
            processor,
            skipped,
            max_attempts=settings.consumer_max_attempts,
            backoff=settings.consumer_retry_backoff_s,
        )
        size = batch_size or settings.consumer_batch_size
        workers = concurrency or (1 if is_sqlite(settings.db_url) else 4)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=size * 8,
            fetch_max_bytes=64 * 1024 * 1024,
        )
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        try:
            await consumer.topics()  # loads the metadata partitions_for_topic reads
            partitions = [
                TopicPartition(topic, p)
                for topic in EVENT_TOPICS
                for p in sorted(consumer.partitions_for_topic(topic) or ())
            ]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            pending = set(partitions)
            while pending:
                batches = await consumer.getmany(*pending, timeout_ms=500)
                # facts do not depend on the order events arrive in, so one transaction
                # may take events of several partitions (each partition's stay in order)
                records: list[ConsumerRecord[bytes, bytes]] = []
                for fetched in batches.values():
                    records.extend(fetched)
                chunks = [records[i : i + size] for i in range(0, len(records), size)]
                for start in range(0, len(chunks), workers):
                    for outcomes in await asyncio.gather(
                        *(delivery.deliver_many(chunk) for chunk in chunks[start : start + workers])
                    ):
                        stats.read += len(outcomes)
                        stats.applied += outcomes.count("processed")
                        stats.duplicates += outcomes.count("duplicate")
                for tp in list(pending):
                    # caught up with the high watermark of the last fetch (ListOffsets is
                    # not relied on: tansu answers it per record batch, not per record)
                    highwater = consumer.highwater(tp)
                    if highwater is not None and await consumer.position(tp) >= highwater:
                        pending.discard(tp)
        finally:
            await consumer.stop()
    finally:
        await engine.dispose()
    stats.skipped = skipped.count
    stats.seconds = time.perf_counter() - started
    return stats


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reset", action="store_true", help="empty the facts first")
    parser.add_argument("--database-url", help="default: DROPSHIP_METRICS_DATABASE_URL")
    parser.add_argument("--bootstrap", help="default: DROPSHIP_KAFKA_BOOTSTRAP")
    parser.add_argument("--batch-size", type=int, help="events per transaction")
    parser.add_argument(
        "--concurrency", type=int, help="transactions at once (default: 1 SQLite, 4 PostgreSQL)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    overrides = {
        k: v
        for k, v in (("database_url", args.database_url), ("kafka_bootstrap", args.bootstrap))
        if v
    }
    settings = MetricsSettings(**overrides)
    try:
        with young_threshold(settings.gc_young_threshold):  # large batches: as when serving
            stats = asyncio.run(
                rebuild(
                    settings,
                    reset=args.reset,
                    batch_size=args.batch_size,
                    concurrency=args.concurrency,
                )
            )
    except KafkaError as exc:
        raise SystemExit(
            f"cannot read the topics at {settings.kafka_bootstrap} ({exc!r}): is the broker up?"
        ) from exc
    print(json.dumps({**asdict(stats), "events_per_s": round(stats.rate, 1)}))


if __name__ == "__main__":
    main()
