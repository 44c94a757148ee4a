"""The Kafka bus over aiokafka: topic set-up, a keyed `acks=all` producer, consumer factory.

Nothing here decides what a message means; `shared.consumer` runs handlers and
`shared.outbox` publishes. `InMemoryBus` (in `shared.testing`) offers the same
`Publisher` interface to unit tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from shared.events import EVENT_TYPES

log = logging.getLogger(__name__)


async def start_or_close(client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient) -> None:
    """Start an aiokafka client; if that fails, close it before the error goes on (a failed
    start leaves its connections open, reported later as unclosed)."""
    try:
        await client.start()
    except BaseException:
        with contextlib.suppress(Exception):
            if isinstance(client, AIOKafkaAdminClient):
                await client.close()
            else:
                await client.stop()
        raise


DLQ_SUFFIX = ".dlq"
EVENT_TOPICS: tuple[str, ...] = tuple(EVENT_TYPES)
ALL_TOPICS: tuple[str, ...] = EVENT_TOPICS + tuple(t + DLQ_SUFFIX for t in EVENT_TOPICS)
DOORBELL_TOPIC = "dropship-doorbell"
"""One partition of empty messages: "events were just published" (see `shared.idle`)."""
DOORBELL_WAIT_MS = 1000
"""Default fetch wait of a doorbell listener. tansu answers a fetch by re-reading its
partitions at the start and then at half the remaining wait (for waits of 250 ms and more),
so a listener costs the broker about one request a second at 1000 ms against five at 200
ms; a ring is heard within about half the wait (the first hop after an idle spell only)."""

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str
    key: bytes
    value: bytes
    headers: Headers = field(default_factory=list)


class Publisher(Protocol):
    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        """Publish all messages, returning only when every one is acknowledged."""


@dataclass(frozen=True)
class BusConfig:
    bootstrap: str
    client_id: str
    partitions: int = 8
    replication_factor: int = 1
    enable_idempotence: bool = False
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 500
    connect_backoff_max_s: float = 5.0
    fetch_max_wait_ms: int = 100
    fetch_min_bytes: int = 1
    """The broker answers a fetch once this much has arrived or `fetch_max_wait_ms` is up:
    above 1, a trickle of events comes back in one fetch per wait, not one fetch each."""
    doorbell: bool = True
    """Ring the doorbell topic after an acknowledged batch of events."""
    ring_every_s: float = 0.0
    """Ring at most once in this long (0: after every batch); the first batch after it rings
    at once. A consumer that hears a ring keeps fetching for its `idle_after_s`, so a ring
    sooner than that after the last one would wake nobody: under load it only cost the
    broker a produce request (and every listener an answer) per batch."""
    linger_ms: int = 2
    """The producer waits this long for more messages to fill a batch (a relay batch is
    sent at once; the wait lets the doorbell ring and a following batch join it)."""
    doorbell_wait_ms: int = DOORBELL_WAIT_MS
    """Fetch wait of the doorbell listener (`DOORBELL_WAIT_MS`)."""
    consumer_timeout_ms: int = 2000
    """Longest aiokafka's background fetch routine sleeps with nothing to react to. It
    wakes at once for a fetch answered, a partition resumed, records consumed, a seek or a
    rebalance, so this only bounds its idle spinning (aiokafka's default, 200 ms, walks
    every assigned partition five times a second even while all of them are paused)."""


class KafkaBus:
    """One producer per process plus the topic administration it needs at start."""

    def __init__(self, config: BusConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._producer: AIOKafkaProducer | None = None
        self._connected = asyncio.Event()
        self._rings: set[asyncio.Task[None]] = set()
        self._clock = clock
        self._rang_at = -math.inf
        self.rings = 0

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def connect(self, topics: Iterable[str] = ALL_TOPICS) -> None:
        """Create topics and start the producer, retrying until the broker is there."""
        delay = 0.2
        while True:
            try:
                await ensure_topics(self.config, topics)
                if self.config.doorbell:
                    await ensure_topics(replace(self.config, partitions=1), [DOORBELL_TOPIC])
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.config.bootstrap,
                    client_id=self.config.client_id,
                    acks="all",
                    enable_idempotence=self.config.enable_idempotence,
                    linger_ms=self.config.linger_ms,
                )
                await start_or_close(producer)
            except (KafkaError, OSError) as exc:
                log.warning(
                    "broker not reachable, retrying",
                    extra={
                        "bootstrap": self.config.bootstrap,
                        "error": repr(exc),
                        "retry_in_s": delay,
                    },
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.connect_backoff_max_s)
                continue
            self._producer = producer
            self._connected.set()
            log.info("connected to broker", extra={"bootstrap": self.config.bootstrap})
            return

    async def close(self) -> None:
        self._connected.clear()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        if self._producer is None:
            raise ConnectionError("producer not connected")
        futures = [
            await self._producer.send(m.topic, m.value, key=m.key, headers=m.headers)
            for m in messages
        ]
        await asyncio.gather(*futures)
        if self.config.doorbell and any(not m.topic.endswith(DLQ_SUFFIX) for m in messages):
            self._ring()

    def _ring(self) -> None:
        """Tell idle consumers to fetch (fire and forget: a lost ring costs a peek's delay),
        unless this process rang less than `ring_every_s` ago: every consumer that heard
        that ring is still fetching, and one that had not yet will fetch this batch too."""
        if self._producer is None:
            return
        now = self._clock()
        if now - self._rang_at < self.config.ring_every_s:
            return
        self._rang_at = now
        self.rings += 1
        client_id = self.config.client_id.encode()

        async def ring(producer: AIOKafkaProducer) -> None:
            with contextlib.suppress(KafkaError, OSError):
                await (await producer.send(DOORBELL_TOPIC, b"", key=client_id))

        task = asyncio.create_task(ring(self._producer))
        self._rings.add(task)
        task.add_done_callback(self._rings.discard)

    async def topic_sizes(self, topics: Sequence[str]) -> dict[str, int]:
        """Messages ever appended to each topic (the sum of its partitions' end offsets;
        0 for a topic the broker does not know)."""
        probe = AIOKafkaConsumer(
            bootstrap_servers=self.config.bootstrap, client_id=f"{self.config.client_id}-sizes"
        )
        await start_or_close(probe)
        try:
            await probe.topics()  # loads the cluster's metadata
            sizes: dict[str, int] = {}
            for topic in topics:
                partitions = [
                    TopicPartition(topic, p) for p in probe.partitions_for_topic(topic) or ()
                ]
                ends = await probe.end_offsets(partitions) if partitions else {}
                sizes[topic] = sum(ends.values())
            return sizes
        finally:
            await probe.stop()

    async def healthy(self, within: float = 2.0) -> bool:
        """Whether the broker answers a metadata request now."""
        if self._producer is None:
            return False
        try:
            async with asyncio.timeout(within):
                return bool(await self._producer.client.fetch_all_metadata())
        except (TimeoutError, KafkaError, OSError):
            return False

    def consumer(self, group_id: str, topics: Sequence[str] = ()) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            *topics,
            bootstrap_servers=self.config.bootstrap,
            client_id=f"{self.config.client_id}-{group_id}",
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=self.config.session_timeout_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            max_poll_records=1000,
            fetch_max_wait_ms=self.config.fetch_max_wait_ms,
            fetch_min_bytes=self.config.fetch_min_bytes,
            consumer_timeout_ms=self.config.consumer_timeout_ms,
        )

    def doorbell_listener(self) -> AIOKafkaConsumer:
        """A consumer of the doorbell's end, in no group (every process hears every ring)."""
        return AIOKafkaConsumer(
            DOORBELL_TOPIC,
            bootstrap_servers=self.config.bootstrap,
            client_id=f"{self.config.client_id}-doorbell",
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            fetch_max_wait_ms=self.config.doorbell_wait_ms,
            consumer_timeout_ms=self.config.consumer_timeout_ms,
        )


async def ensure_topics(config: BusConfig, topics: Iterable[str]) -> None:
    """Create any missing topic with the configured partition count (idempotent)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap, client_id=config.client_id)
    await start_or_close(admin)
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            response = await admin.create_topics(
                [NewTopic(t, config.partitions, config.replication_factor) for t in missing]
            )
            for topic, code, message in _topic_errors(response):
                if code not in (0, 36):  # 36: TOPIC_ALREADY_EXISTS (a racing creator)
                    raise KafkaError(f"creating topic {topic} failed: {code} {message}")
            log.info("created topics", extra={"topics": missing})
    finally:
        await admin.close()


def _topic_errors(response: object) -> list[tuple[str, int, str | None]]:
    errors = getattr(response, "topic_errors", [])
    return [(e[0], e[1], e[2] if len(e) > 2 else None) for e in errors]
