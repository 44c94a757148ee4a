"""Test helpers: an in-memory bus with the Kafka bus's interface (unit tests only) and polling."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from shared.bus import OutgoingMessage
from shared.consumer import MessageProcessor, RetryingDelivery

T = TypeVar("T")


@dataclass(frozen=True)
class MemoryRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


class InMemoryBus:
    """One partition per topic, consumer groups with their own offsets, the same DLQ rules.

    `send_batch` is the `Publisher` interface the outbox relay uses; `drain()` runs every
    subscribed group over what it has not yet seen, through the same `RetryingDelivery`
    the Kafka consumer uses, so retries, dead-lettering and dedupe behave identically.
    """

    def __init__(self, batch_size: int = 100) -> None:
        self.batch_size = batch_size
        self.topics: dict[str, list[MemoryRecord]] = defaultdict(list)
        self._groups: list[tuple[RetryingDelivery, dict[str, int]]] = []

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        for m in messages:
            log = self.topics[m.topic]
            log.append(MemoryRecord(m.topic, 0, len(log), m.key, m.value, tuple(m.headers)))

    def subscribe(self, processor: MessageProcessor[Any], *, max_attempts: int = 3) -> None:
        delivery = RetryingDelivery(
            processor, self, max_attempts=max_attempts, backoff=0, backoff_max=0
        )
        self._groups.append((delivery, defaultdict(int)))

    def messages(self, topic: str) -> list[MemoryRecord]:
        return list(self.topics.get(topic, []))

    async def drain(self) -> int:
        """Deliver until every group has caught up; returns how many deliveries ran."""
        delivered = 0
        progress = True
        while progress:
            progress = False
            for delivery, offsets in self._groups:
                for topic in delivery.processor.handlers:
                    log = self.topics.get(topic, [])
                    pending = log[offsets[topic] : offsets[topic] + self.batch_size]
                    if pending:
                        await delivery.deliver_many(pending)
                        offsets[topic] += len(pending)
                        delivered += len(pending)
                        progress = True
        return delivered


async def eventually(
    probe: Callable[[], Awaitable[T]],
    *,
    timeout: float = 30.0,  # noqa: ASYNC109 - a deadline for polling, not for one call
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what}; last value: {last!r}"
            )
        await asyncio.sleep(interval)
