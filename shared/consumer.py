"""Idempotent consumers: topic -> envelope -> inbox check -> handler, with retries and a DLQ.

Error tree (what a handler may raise):

- `PermanentError` and `InvalidEvent` (bad JSON, bad envelope, schema-invalid data):
  the message can never succeed; it goes to `<topic>.dlq` at once.
- any other exception is treated as transient: retried with jittered exponential
  backoff up to `max_attempts`, then dead-lettered.

Offsets are committed only after the handler's transaction (state + outbox + inbox
row) has committed, so a crash re-delivers and the inbox turns the repeat into a no-op.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from shared import tracing
from shared.bus import DLQ_SUFFIX, KafkaBus, OutgoingMessage, Publisher
from shared.events import Envelope, EventData, InvalidEvent
from shared.logging import log_context
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

Handler = Callable[[Envelope, EventData, UnitOfWork], Awaitable[None]]

CONSUMED = Counter(
    "dropship_events_consumed_total",
    "Events taken off the bus, by outcome (processed, duplicate, dead_lettered).",
    ["group", "topic", "outcome"],
)


class PermanentError(Exception):
    """Raised by a handler for a message that will never succeed: dead-letter it now."""


class MessageProcessor:
    """Runs one message through envelope validation, the inbox and its handler."""

    def __init__(
        self,
        group: str,
        handlers: Mapping[str, Handler],
        uow_factory: Callable[[], UnitOfWork],
    ) -> None:
        self.group = group
        self.handlers = dict(handlers)
        self.uow_factory = uow_factory

    async def process(self, topic: str, raw: bytes | None) -> bool:
        """Apply the message once; returns False when it was a duplicate."""
        envelope = Envelope.from_bytes(raw)
        if envelope.type != topic:
            raise InvalidEvent(f"event type {envelope.type!r} does not belong on topic {topic!r}")
        data = envelope.payload()
        handler = self.handlers.get(topic)
        if handler is None:
            raise PermanentError(f"no handler for topic {topic!r} in group {self.group!r}")
        token = tracing.traceparent_var.set(envelope.traceparent)
        try:
            with log_context(order_id=envelope.subject, event_id=envelope.id):
                async with self.uow_factory() as uow:
                    if not await uow.claim(self.group, envelope, topic):
                        return False
                    await handler(envelope, data, uow)
                    await uow.commit()
                return True
        finally:
            tracing.traceparent_var.reset(token)


class Record(Protocol):
    """What a consumer needs of a message: Kafka's `ConsumerRecord` and the in-memory bus's."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]]: ...


class RetryingDelivery:
    """Delivers one record: retries transient failures, dead-letters permanent or exhausted ones."""

    def __init__(
        self,
        processor: MessageProcessor,
        publisher: Publisher,
        *,
        max_attempts: int = 5,
        backoff: float = 0.2,
        backoff_max: float = 5.0,
    ) -> None:
        self.processor = processor
        self.publisher = publisher
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max

    async def deliver(self, record: Record) -> str:
        """Returns the outcome: processed, duplicate or dead_lettered."""
        attempt = 0
        while True:
            attempt += 1
            try:
                fresh = await self.processor.process(record.topic, record.value)
                outcome = "processed" if fresh else "duplicate"
                break
            except (PermanentError, InvalidEvent) as exc:
                await self._dead_letter(record, exc, attempt)
                outcome = "dead_lettered"
                break
            except Exception as exc:
                if attempt >= self.max_attempts:
                    await self._dead_letter(record, exc, attempt)
                    outcome = "dead_lettered"
                    break
                delay = min(self.backoff * 2 ** (attempt - 1), self.backoff_max)
                log.warning(
                    "handler failed, retrying",
                    extra={"topic": record.topic, "attempt": attempt, "error": repr(exc)},
                )
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
        CONSUMED.labels(self.processor.group, record.topic, outcome).inc()
        return outcome

    async def _dead_letter(self, record: Record, exc: BaseException, attempts: int) -> None:
        headers = dead_letter_headers(
            exc, attempts, record.topic, record.partition, record.offset, self.processor.group
        )
        out = OutgoingMessage(
            topic=record.topic + DLQ_SUFFIX,
            key=record.key or b"",
            value=record.value or b"",
            headers=[h for h in record.headers or [] if not h[0].startswith(DLQ_HEADER_PREFIX)]
            + headers,
        )
        async for retry in AsyncRetrying(
            retry=retry_if_exception_type(Exception),
            wait=wait_exponential_jitter(multiplier=0.2, max=5.0, jitter=0.2),
        ):
            with retry:
                await self.publisher.send_batch([out])
        log.error(
            "message dead-lettered",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "attempts": attempts,
                "error_type": type(exc).__name__,
            },
        )


class ConsumerRunner:
    """Consumes the processor's topics in its consumer group until cancelled.

    Partitions of one poll are worked concurrently, each strictly in offset order.
    """

    def __init__(self, bus: KafkaBus, delivery: RetryingDelivery) -> None:
        self.bus = bus
        self.delivery = delivery
        self.assigned = False

    @property
    def topics(self) -> Sequence[str]:
        return list(self.delivery.processor.handlers)

    async def run(self) -> None:
        await self.bus.wait_connected()
        delay = 0.2
        while True:
            consumer = self.bus.consumer(self.delivery.processor.group, self.topics)
            try:
                await consumer.start()
            except asyncio.CancelledError:
                await consumer.stop()
                raise
            except (KafkaError, OSError) as exc:
                await consumer.stop()
                log.warning("consumer cannot start, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            break
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                self.assigned = bool(consumer.assignment())
                if not batches:
                    continue
                results = await asyncio.gather(*(self._run_partition(m) for m in batches.values()))
                offsets = dict(zip(batches, results, strict=True))
                try:
                    await consumer.commit(offsets)
                except KafkaError as exc:  # rebalance: the next owner re-reads, the inbox dedupes
                    log.warning("offset commit failed", extra={"error": repr(exc)})
        finally:
            await consumer.stop()

    async def _run_partition(self, messages: list[ConsumerRecord[Any, Any]]) -> int:
        for msg in messages:
            await self.delivery.deliver(msg)
        return int(messages[-1].offset) + 1


DLQ_HEADER_PREFIX = "dlq."


def dead_letter_headers(
    exc: BaseException, attempts: int, topic: str, partition: int, offset: int, group: str
) -> list[tuple[str, bytes]]:
    fields = {
        "error_type": type(exc).__name__,
        "error_message": str(exc)[:2000],
        "attempts": str(attempts),
        "original_topic": topic,
        "original_partition": str(partition),
        "original_offset": str(offset),
        "consumer_group": group,
        "failed_at": datetime.now(UTC).isoformat(),
    }
    return [(DLQ_HEADER_PREFIX + k, v.encode()) for k, v in fields.items()]


__all__ = [
    "ConsumerRunner",
    "Handler",
    "MessageProcessor",
    "PermanentError",
    "Record",
    "RetryingDelivery",
    "dead_letter_headers",
]
