"""Idempotent consumers: topic -> envelope -> inbox check -> handler, with retries and a DLQ.

Error tree (what a handler may raise):

- `PermanentError` and `InvalidEvent` (bad JSON, bad envelope, schema-invalid data):
  the message can never succeed; it goes to `<topic>.dlq` at once.
- an infrastructure failure (the database unreachable or restarting, a dropped
  connection: `is_infrastructure_failure`) is not the message's fault: the partition
  pauses and retries without limit, never dead-lettering and using up no attempts.
- any other exception is treated as transient: retried with jittered exponential
  backoff up to `max_attempts`, then dead-lettered.

Offsets are committed only after the handler's transaction (state + outbox + inbox
row) has committed, so a crash re-delivers and the inbox turns the repeat into a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from opentelemetry.trace import Span, SpanKind, StatusCode
from opentelemetry.util.types import AttributeValue
from prometheus_client import Counter, Gauge
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from shared import tracing
from shared.bus import DLQ_SUFFIX, KafkaBus, OutgoingMessage, Publisher
from shared.events import Envelope, EventData, InvalidEvent
from shared.failures import DLQ_HEADER_PREFIX, dead_letter_headers, is_infrastructure_failure
from shared.idle import Doorbell, IdleGate
from shared.logging import log_context
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

E = TypeVar("E", bound=EventData)
U = TypeVar("U", bound=UnitOfWork)

Handler = Callable[[Envelope, E, U], Awaitable[None]]
"""A typed event handler: `async def h(envelope, event: OrderPlaced, uow: MyUnitOfWork)`."""

BatchHandler = Callable[[Sequence[tuple[Envelope, EventData]], U], Awaitable[None]]
"""Applies the fresh events of one batch at once (set-based writes); see `MessageProcessor`."""


@dataclass(frozen=True)
class Subscription(Generic[U]):
    """One topic wired to its handler; made by `on()`, which checks the types once."""

    topic: str
    model: type[EventData]
    apply: Callable[[Envelope, EventData, U], Awaitable[None]]


def on(model: type[E], handler: Callable[[Envelope, E, U], Awaitable[None]]) -> Subscription[U]:
    """Subscribe `handler` to the topic of `model`; the handler receives that model, typed.

    The topic is the model's `event_type`, so a handler can never be wired to a topic
    whose payload it does not understand.
    """

    async def apply(envelope: Envelope, data: EventData, uow: U) -> None:
        if not isinstance(data, model):  # the envelope's type picked another model
            raise InvalidEvent(f"{envelope.type} carries {type(data).__name__}, not {model}")
        await handler(envelope, data, uow)

    return Subscription(model.event_type, model, apply)


def subscriptions(*subs: Subscription[U]) -> dict[str, Subscription[U]]:
    """A service's consumer table, topic -> subscription; one subscription per topic."""
    table: dict[str, Subscription[U]] = {}
    for sub in subs:
        if sub.topic in table:
            raise ValueError(f"two handlers for topic {sub.topic!r}")
        table[sub.topic] = sub
    return table


CONSUMED = Counter(
    "dropship_events_consumed_total",
    "Events taken off the bus, by outcome (processed, duplicate, dead_lettered).",
    ["group", "topic", "outcome"],
)

INFRA_RETRIES = Counter(
    "dropship_consumer_infrastructure_retries_total",
    "Deliveries paused because the database or network was unavailable (never dead-lettered).",
    ["group", "topic"],
)

LAG = Gauge(
    "dropship_consumer_lag",
    "Messages on a partition not yet processed by the group (high watermark - next offset).",
    ["group", "topic", "partition"],
)


class PermanentError(Exception):
    """Raised by a handler for a message that will never succeed: dead-letter it now."""


_Apply = Callable[[Envelope, EventData, U], Awaitable[None]]


class MessageProcessor(Generic[U]):
    """Runs messages through envelope validation, the inbox and their handler.

    `handlers` is the service's consumer table (`subscriptions(on(Model, handler), ...)`).
    A batch is claimed in the inbox with one statement. With a `batch_handler` its fresh
    events go to that one call (in order), for consumers that write set-based; `handlers`
    then only name the topics.
    """

    def __init__(
        self,
        group: str,
        handlers: Mapping[str, Subscription[U]],
        uow_factory: Callable[[], U],
        batch_handler: BatchHandler[U] | None = None,
        tracer: tracing.Tracing | None = None,
    ) -> None:
        self.group = group
        self.handlers = dict(handlers)
        self.uow_factory = uow_factory
        self.batch_handler = batch_handler
        self.tracer = tracer or tracing.DISABLED

    def _parse(self, topic: str, raw: bytes | None) -> tuple[Envelope, EventData, _Apply[U]]:
        envelope = Envelope.from_bytes(raw)
        if envelope.type != topic:
            raise InvalidEvent(f"event type {envelope.type!r} does not belong on topic {topic!r}")
        data = envelope.payload()
        sub = self.handlers.get(topic)
        if sub is None:
            raise PermanentError(f"no handler for topic {topic!r} in group {self.group!r}")
        return envelope, data, sub.apply

    async def process(self, topic: str, raw: bytes | None) -> bool:
        """Apply one message once; returns False when it was a duplicate."""
        return (await self.process_many([(topic, raw)]))[0]

    async def process_many(self, messages: Sequence[tuple[str, bytes | None]]) -> list[bool]:
        """Apply messages in order in ONE transaction; all or nothing.

        Returns, per message, whether it was new (False: a duplicate). Any error rolls
        the whole batch back; the caller then retries message by message.
        """
        parsed = [self._parse(topic, raw) for topic, raw in messages]
        if self.batch_handler is not None:
            return await self._process_batch(parsed, self.batch_handler)
        async with self.uow_factory() as uow:
            # one statement claims the whole batch (a round trip per message before)
            fresh = await uow.claim_many(self.group, [envelope for envelope, _, _ in parsed])
            for (envelope, data, handler), new in zip(parsed, fresh, strict=True):
                with (
                    self._span(envelope) as span,
                    log_context(order_id=envelope.subject, event_id=envelope.id),
                ):
                    if not new:
                        span.set_attribute("dropship.duplicate", True)
                        continue
                    await handler(envelope, data, uow)
            await uow.commit()
        return fresh

    async def _process_batch(
        self,
        parsed: Sequence[tuple[Envelope, EventData, _Apply[U]]],
        batch_handler: BatchHandler[U],
    ) -> list[bool]:
        spans = [
            span
            for envelope, _, _ in parsed
            if (span := self.tracer.start_span(*self._span_args(envelope))) is not None
        ]
        try:
            async with self.uow_factory() as uow:
                fresh = await uow.claim_many(self.group, [envelope for envelope, _, _ in parsed])
                todo = [(e, d) for (e, d, _), new in zip(parsed, fresh, strict=True) if new]
                if todo:
                    await batch_handler(todo, uow)
                await uow.commit()
        except Exception as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR)
            raise
        finally:
            for span in spans:
                span.end()
        return fresh

    def _span(self, envelope: Envelope) -> contextlib.AbstractContextManager[Span]:
        """The consumer span of one event, a child of the context its envelope carries."""
        return self.tracer.span(*self._span_args(envelope))

    def _span_args(
        self, envelope: Envelope
    ) -> tuple[str, SpanKind, str | None, dict[str, AttributeValue]]:
        return (
            f"{envelope.type} process",
            SpanKind.CONSUMER,
            envelope.traceparent,
            {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": envelope.type,
                "messaging.consumer.group.name": self.group,
                "messaging.message.id": envelope.id,
                "dropship.order_id": envelope.subject,
            },
        )


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
        processor: MessageProcessor[Any],
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

    async def deliver_many(self, records: Sequence[Record]) -> list[str]:
        """Deliver records of one partition in order, in one transaction when all is well.

        If the batch fails as a whole, each record is delivered on its own, so one bad
        message costs its neighbours nothing but a second try.
        """
        if len(records) > 1:
            try:
                fresh = await self.processor.process_many([(r.topic, r.value) for r in records])
            except Exception as exc:
                log.info("batch failed, delivering one by one", extra={"error": repr(exc)})
            else:
                outcomes = ["processed" if f else "duplicate" for f in fresh]
                for record, outcome in zip(records, outcomes, strict=True):
                    CONSUMED.labels(self.processor.group, record.topic, outcome).inc()
                return outcomes
        return [await self.deliver(r) for r in records]

    async def deliver(self, record: Record) -> str:
        """Returns the outcome: processed, duplicate or dead_lettered."""
        attempt = 0
        conflicts = 0
        outages = 0
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
                outage = is_infrastructure_failure(exc)  # the database is away: wait, forever
                if outage:
                    outages += 1
                    INFRA_RETRIES.labels(self.processor.group, record.topic).inc()
                if outage or (_is_lock_conflict(exc) and conflicts < 50):
                    conflicts += not outage  # a deadlock victim did nothing wrong either
                    attempt -= 1  # neither uses up one of the message's attempts
                if attempt >= self.max_attempts:
                    await self._dead_letter(record, exc, attempt)
                    outcome = "dead_lettered"
                    break
                exponent = max(attempt, min(outages, 16)) - 1
                delay = min(self.backoff * 2**exponent, self.backoff_max)
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


_LOCK_CONFLICTS = {"40P01", "40001"}  # deadlock detected, serialization failure


def _is_lock_conflict(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in _LOCK_CONFLICTS


class ConsumerRunner:
    """Consumes the processor's topics in its consumer group until cancelled.

    Each partition is worked by its own task, strictly in offset order and in batches
    of up to `batch_size` per transaction; a busy partition is paused so the others
    keep flowing. Offsets are committed for what has finished, after every poll and
    before partitions are handed to another member on a rebalance. After `idle_after_s`
    with nothing to do it stops fetching until the doorbell rings or `peek_s` passes
    (`shared.idle`; 0 turns that off).
    """

    def __init__(
        self,
        bus: KafkaBus,
        delivery: RetryingDelivery,
        *,
        batch_size: int = 100,
        idle_after_s: float = 3.0,
        peek_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.delivery = delivery
        self.batch_size = batch_size
        self.doorbell = Doorbell(bus) if bus.config.doorbell and idle_after_s > 0 else None
        self.idle = IdleGate(self.doorbell, idle_after_s=idle_after_s, peek_s=peek_s)
        self.assigned = False
        self._consumer: AIOKafkaConsumer | None = None
        self._work: dict[TopicPartition, asyncio.Task[None]] = {}
        self._done: dict[TopicPartition, int] = {}

    @property
    def topics(self) -> Sequence[str]:
        return list(self.delivery.processor.handlers)

    async def run(self) -> None:
        await self.bus.wait_connected()
        consumer = await self._start()
        self._consumer = consumer
        bell = asyncio.create_task(self.doorbell.run()) if self.doorbell else None
        # after waking, poll long enough for one whole fetch to come back
        awake_ms = poll_ms = 100
        woken_ms = 2 * self.bus.config.fetch_max_wait_ms + 100
        try:
            while True:
                batches = await consumer.getmany(
                    timeout_ms=poll_ms, max_records=self.batch_size * 8
                )
                poll_ms = awake_ms
                self.assigned = bool(consumer.assignment())
                for tp, messages in batches.items():
                    consumer.pause(tp)
                    self._work[tp] = asyncio.create_task(self._run_partition(tp, messages))
                self._reap()
                await self._commit()
                if batches or self._work:
                    self.idle.active()
                elif self.idle.should_sleep():
                    await self.idle.sleep(consumer, set(self._work))
                    poll_ms = woken_ms
                if not batches and self._work:
                    await asyncio.wait(list(self._work.values()), timeout=0.1)
        finally:
            if bell is not None:
                bell.cancel()
                await asyncio.gather(bell, return_exceptions=True)
            for task in self._work.values():
                task.cancel()
            await asyncio.gather(*self._work.values(), return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._commit()
            await consumer.stop()
            self._consumer = None

    async def _start(self) -> AIOKafkaConsumer:
        delay = 0.2
        while True:
            consumer = self.bus.consumer(self.delivery.processor.group)
            consumer.subscribe(list(self.topics), listener=_Revocation(self))
            try:
                await consumer.start()
                return consumer
            except asyncio.CancelledError:
                await consumer.stop()
                raise
            except (KafkaError, OSError) as exc:
                await consumer.stop()
                log.warning("consumer cannot start, retrying", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _run_partition(
        self, tp: TopicPartition, messages: list[ConsumerRecord[Any, Any]]
    ) -> None:
        next_offset = int(messages[0].offset)
        try:
            for start in range(0, len(messages), self.batch_size):
                chunk = messages[start : start + self.batch_size]
                await self.delivery.deliver_many(chunk)
                next_offset = int(chunk[-1].offset) + 1
                self._done[tp] = next_offset
                self._record_lag(tp, next_offset)
        except Exception:
            log.exception("partition worker failed; its records will be read again")
            if self._consumer is not None and tp in self._consumer.assignment():
                self._consumer.seek(tp, next_offset)

    def _record_lag(self, tp: TopicPartition, next_offset: int) -> None:
        highwater = self._consumer.highwater(tp) if self._consumer is not None else None
        if highwater is not None:
            group = self.delivery.processor.group
            LAG.labels(group, tp.topic, str(tp.partition)).set(max(highwater - next_offset, 0))

    def _reap(self) -> None:
        """Resume partitions whose work has finished."""
        assert self._consumer is not None
        for tp, task in list(self._work.items()):
            if task.done():
                del self._work[tp]
                if tp in self._consumer.assignment():
                    self._consumer.resume(tp)

    async def _commit(self, only: set[TopicPartition] | None = None) -> None:
        assert self._consumer is not None
        offsets = {tp: off for tp, off in self._done.items() if only is None or tp in only}
        if not offsets:
            return
        try:
            async with asyncio.timeout(10):  # a broker that is gone must not hang shutdown
                await self._consumer.commit(offsets)
        except (KafkaError, TimeoutError) as exc:  # the next owner re-reads; the inbox dedupes
            log.warning("offset commit failed", extra={"error": repr(exc)})
            return
        for tp in offsets:
            if self._done.get(tp) == offsets[tp]:
                del self._done[tp]

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Finish in-flight work of partitions leaving us and commit it, to limit re-reads."""
        tasks = [self._work[tp] for tp in revoked if tp in self._work]
        if tasks:
            await asyncio.wait(tasks, timeout=10)
        with contextlib.suppress(Exception):
            await self._commit(set(revoked))
        for tp in revoked:
            task = self._work.pop(tp, None)
            if task is not None and not task.done():
                task.cancel()
            self._done.pop(tp, None)


class _Revocation(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runner.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.runner.assigned = bool(assigned)


__all__ = [
    "DLQ_HEADER_PREFIX",
    "BatchHandler",
    "ConsumerRunner",
    "Handler",
    "MessageProcessor",
    "PermanentError",
    "Record",
    "RetryingDelivery",
    "Subscription",
    "dead_letter_headers",
    "on",
    "subscriptions",
]
