"""The Kafka side of a consumer group: polls, one transaction per poll, offsets, rebalances."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from shared.bus import KafkaBus
from shared.consumer.delivery import RetryingDelivery
from shared.idle import Doorbell, IdleGate

log = logging.getLogger(__name__)

LAG = Gauge(
    "dropship_consumer_lag",
    "Messages on a partition not yet processed by the group (high watermark - next offset).",
    ["group", "topic", "partition"],
)

Message: TypeAlias = ConsumerRecord[Any, Any]
Lane: TypeAlias = list[list[Message]]
"""Transactions run one after another; each holds whole partitions, or one partition's part."""


def plan_lanes(polled: Mapping[TopicPartition, Sequence[Message]], batch_size: int) -> list[Lane]:
    """Cut a poll into transactions of up to `batch_size` records, grouped in lanes that run
    side by side (no partition is in two lanes, so each keeps its offset order).

    Whole partitions are packed together, so a moderate poll spanning every partition is
    ONE transaction; a partition with more than `batch_size` records gets a lane of its own,
    in chunks. Within a packed transaction, records are merged by timestamp (each
    partition's stay in offset order), so events of one order on two topics tend to apply
    in the order they were published.
    """
    lanes: list[Lane] = []
    packed: list[Sequence[Message]] = []
    size = 0
    for records in polled.values():
        if not records:
            continue
        if len(records) > batch_size:
            chunks = range(0, len(records), batch_size)
            lanes.append([list(records[i : i + batch_size]) for i in chunks])
            continue
        if size + len(records) > batch_size:
            lanes.append([_merge(packed)])
            packed, size = [], 0
        packed.append(records)
        size += len(records)
    if packed:
        lanes.append([_merge(packed)])
    return lanes


def _merge(parts: Sequence[Sequence[Message]]) -> list[Message]:
    return list(heapq.merge(*parts, key=lambda r: r.timestamp)) if len(parts) > 1 else [*parts[0]]


LINGER_MARGIN_MS = 50
"""Beyond a fetch's wait, how long a linger waits for its answer before calling it empty."""


class ConsumerRunner:
    """Consumes the processor's topics in its consumer group until cancelled.

    The records of a poll, across partitions and topics, are applied in one transaction
    (up to `batch_size`; see `plan_lanes`), strictly in offset order within each partition;
    when a poll returns fewer than `batch_size`, the runner lingers up to `linger_ms` for more
    (a latency-tolerant consumer lingers longer, so one transaction holds many events).
    Partitions with work in flight are paused, so the others keep flowing. A failing
    transaction falls back to each partition on its own (`RetryingDelivery.deliver_poll`).
    Offsets are committed for what has finished (only after its transaction committed),
    after every poll and before partitions are handed to another member on a rebalance.
    After `idle_after_s` with nothing to do it stops fetching until the doorbell rings or
    `peek_s` passes (`shared.idle`; 0 turns that off).
    """

    def __init__(
        self,
        bus: KafkaBus,
        delivery: RetryingDelivery,
        *,
        batch_size: int = 100,
        linger_ms: float = 5.0,
        idle_after_s: float = 3.0,
        peek_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.delivery = delivery
        self.batch_size = batch_size
        self.linger_ms = linger_ms
        self.revoke_grace_s = 10.0
        """How long a rebalance waits for transactions in flight before rolling them back."""
        self.doorbell = Doorbell(bus) if bus.config.doorbell and idle_after_s > 0 else None
        self.idle = IdleGate(self.doorbell, idle_after_s=idle_after_s, peek_s=peek_s)
        self.assigned = False
        self._consumer: AIOKafkaConsumer | None = None
        self._work: dict[TopicPartition, asyncio.Task[None]] = {}  # busy partition -> its lane
        self._done: dict[TopicPartition, int] = {}  # next offset to commit
        self._held: dict[TopicPartition, list[Message]] = {}  # polled, lingering for more

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
                polled = await self._poll(consumer, poll_ms)
                poll_ms = awake_ms
                self.assigned = bool(consumer.assignment())
                self._reap()
                await self._commit()
                if polled or self._work:
                    self.idle.active()
                elif self.idle.should_sleep():
                    await self.idle.sleep(consumer, set(self._work))
                    poll_ms = woken_ms
                if not polled and self._work:
                    await asyncio.wait(set(self._work.values()), timeout=0.1)
        finally:
            if bell is not None:
                bell.cancel()
                await asyncio.gather(bell, return_exceptions=True)
            self._held = {}  # never applied: the next owner (or our next run) reads them again
            lanes = set(self._work.values())
            for task in lanes:
                task.cancel()
            await asyncio.gather(*lanes, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._commit()
            await consumer.stop()
            self._consumer = None

    async def _poll(self, consumer: AIOKafkaConsumer, poll_ms: int) -> bool:
        """Fetch (lingering for a fuller transaction), then start the poll's lanes."""
        self._hold(await consumer.getmany(timeout_ms=poll_ms, max_records=self.batch_size * 8))
        if not self._held:
            return False
        await self._linger(consumer)
        polled, self._held = self._held, {}
        assigned = consumer.assignment()
        polled = {tp: records for tp, records in polled.items() if tp in assigned}
        for lane in plan_lanes(polled, self.batch_size):
            task = asyncio.create_task(self._run_lane(lane))
            for tp in {TopicPartition(r.topic, r.partition) for r in lane[0]}:
                consumer.pause(tp)
                self._work[tp] = task
        return bool(polled)

    async def _linger(self, consumer: AIOKafkaConsumer) -> None:
        """Top the hold up to a batch for up to `linger_ms`: keep asking until the batch is
        full, the time is up, or one fetch wait (`fetch_max_wait_ms`, plus a margin for the
        round trip) has passed with nothing new. `getmany` returns only when records arrive
        or its timeout is up, not when a fetch comes back empty, so each ask is bounded by
        that wait: a lone event is held about one fetch wait, not the whole linger."""
        if self.linger_ms <= 0:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.linger_ms / 1000
        quiet_ms = self.bus.config.fetch_max_wait_ms + LINGER_MARGIN_MS
        while (held := sum(map(len, self._held.values()))) < self.batch_size:
            left_ms = int((deadline - loop.time()) * 1000)
            if left_ms <= 0:
                return
            more = await consumer.getmany(
                timeout_ms=min(left_ms, quiet_ms), max_records=self.batch_size - held
            )
            if not more:
                return
            self._hold(more)  # a revocation meanwhile dropped its partitions from the hold

    def _hold(self, polled: Mapping[TopicPartition, list[Message]]) -> None:
        for tp, records in polled.items():
            self._held.setdefault(tp, []).extend(records)

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

    async def _run_lane(self, lane: Lane) -> None:
        """Apply a lane's transactions in turn; release each partition once it is through.

        A partition whose records could not all be applied (an error, or cancelled by a
        revocation or shutdown) is sought back to its first unapplied offset, so nothing
        is skipped; what did commit is in `_done`, to be committed to Kafka."""
        next_offset: dict[TopicPartition, int] = {}
        last: dict[TopicPartition, int] = {}
        for chunk in lane:
            for r in chunk:
                tp = TopicPartition(r.topic, r.partition)
                next_offset.setdefault(tp, int(r.offset))
                last[tp] = int(r.offset)

        def finished(part: Sequence[Message]) -> None:
            tp = TopicPartition(part[-1].topic, part[-1].partition)
            next_offset[tp] = int(part[-1].offset) + 1
            self._done[tp] = next_offset[tp]
            self._record_lag(tp, next_offset[tp])
            if next_offset[tp] > last[tp]:
                self._release(tp)

        try:
            for chunk in lane:
                await self.delivery.deliver_poll(chunk, finished)
        except Exception:
            log.exception("consumer lane failed; its records will be read again")
        finally:
            for tp in [tp for tp in last if next_offset[tp] <= last[tp]]:
                if self._consumer is not None and tp in self._consumer.assignment():
                    self._consumer.seek(tp, next_offset[tp])
                self._release(tp)

    def _release(self, tp: TopicPartition) -> None:
        """The partition has no work in flight any more: fetch it again."""
        if self._work.pop(tp, None) is None or self._consumer is None:
            return
        if tp in self._consumer.assignment():
            self._consumer.resume(tp)

    def _record_lag(self, tp: TopicPartition, next_offset: int) -> None:
        highwater = self._consumer.highwater(tp) if self._consumer is not None else None
        if highwater is not None:
            group = self.delivery.processor.group
            LAG.labels(group, tp.topic, str(tp.partition)).set(max(highwater - next_offset, 0))

    def _reap(self) -> None:
        """Resume partitions whose lane has ended (a lane releases its own; a safety net)."""
        for tp, task in list(self._work.items()):
            if task.done():
                self._release(tp)

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
        """Finish in-flight work of partitions leaving us and commit it, to limit re-reads.

        Held records of revoked partitions are dropped; lanes still running after the grace
        period are cancelled (rolled back) BEFORE the commit, so nothing of a revoked
        partition is applied once this returns."""
        for tp in revoked:
            self._held.pop(tp, None)
        lanes = {self._work[tp] for tp in revoked if tp in self._work}
        if lanes:
            _, stuck = await asyncio.wait(lanes, timeout=self.revoke_grace_s)
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._commit(set(revoked))
        for tp in revoked:
            self._work.pop(tp, None)
            self._done.pop(tp, None)


class _Revocation(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: ConsumerRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.runner.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.runner.assigned = bool(assigned)
