"""Delivery of records: one transaction when all is well, else one by one with retries and a DLQ."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter
from tenacity import AsyncRetrying, retry_if_exception_type, wait_exponential_jitter

from shared.bus import DLQ_SUFFIX, OutgoingMessage, Publisher
from shared.consumer.processor import MessageProcessor, PermanentError
from shared.events import InvalidEvent
from shared.failures import DLQ_HEADER_PREFIX, dead_letter_headers, is_infrastructure_failure

log = logging.getLogger(__name__)

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


R = TypeVar("R", bound=Record)


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

    async def deliver_poll(
        self, records: Sequence[R], finished: Callable[[Sequence[R]], None]
    ) -> None:
        """Deliver records of several partitions in ONE transaction when all is well.

        `records` keep offset order within each partition; `finished(part)` is called with
        each partition's records once they are all applied (or dead-lettered). If the
        transaction fails, each partition is delivered on its own (`deliver_many`) and
        concurrently: nothing was applied, so nothing is applied twice, and a poison
        message in one partition never holds another back.
        """
        parts: dict[tuple[str, int], list[R]] = {}
        for record in records:
            parts.setdefault((record.topic, record.partition), []).append(record)
        if len(parts) > 1 and await self._together(records, "by partition") is not None:
            for part in parts.values():
                finished(part)
            return

        async def one(part: list[R]) -> None:
            await self.deliver_many(part)
            finished(part)

        outcomes = await asyncio.gather(*(one(p) for p in parts.values()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _together(self, records: Sequence[Record], fallback: str) -> list[str] | None:
        """Apply `records` in one transaction: their outcomes, or None when it failed (and
        nothing of it stayed), for the caller to deliver them `fallback`."""
        try:
            fresh = await self.processor.process_many([(r.topic, r.value) for r in records])
        except Exception as exc:
            log.info("batch failed, delivering %s", fallback, extra={"error": repr(exc)})
            return None
        outcomes = ["processed" if f else "duplicate" for f in fresh]
        for record, outcome in zip(records, outcomes, strict=True):
            CONSUMED.labels(self.processor.group, record.topic, outcome).inc()
        return outcomes

    async def deliver_many(self, records: Sequence[Record]) -> list[str]:
        """Deliver records of one partition in order, in one transaction when all is well.

        If the batch fails as a whole, each record is delivered on its own, so one bad
        message costs its neighbours nothing but a second try.
        """
        if len(records) > 1 and (outcomes := await self._together(records, "one by one")):
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
