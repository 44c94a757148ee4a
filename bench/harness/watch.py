"""The bench's own consumer of the platform's outcome events: when each order was confirmed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer

from bench.harness.clock import perf
from bench.harness.kafka import join

CONFIRMED, FAILED = "supplier-confirmed", "order-routing-failed"


class Confirmations:
    """Reads `supplier-confirmed` and `order-routing-failed` in a group of its own: when each
    order line was confirmed here, which lines failed, how many supplier orders an order got.

    `from_end` positions every partition at its end once joined (nothing earlier is read).
    A confirmation's time is its record's timestamp (set by the supplier's relay as it
    publishes), not when this consumer reads it: tansu answers a fetch that waits for data
    some way into its wait, not as the data comes (a 500 ms wait added 120-140 ms to every
    placed -> confirmed at 10 orders/s when the read time counted), and a short wait instead
    made the broker answer this consumer a hundred times a second (0.07 cores, counted as
    the system's). So the measuring end adds neither latency nor broker work.
    """

    def __init__(self, bootstrap: str, *, from_end: bool = False):
        self.consumer = AIOKafkaConsumer(
            CONFIRMED,
            FAILED,
            bootstrap_servers=bootstrap,
            group_id=f"bench-confirmations-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="latest" if from_end else "earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
            fetch_max_wait_ms=500,
        )
        self.from_end = from_end
        self.confirmed: dict[str, dict[str, float]] = defaultdict(dict)  # order -> line -> t
        self.failed: dict[str, set[str]] = defaultdict(set)
        self.events: Counter[str] = Counter()  # supplier-confirmed events per order
        self.task: asyncio.Task[None] | None = None
        self.wall_to_perf = perf() - time.time()
        """Added to a record's timestamp (wall clock) gives the bench's clock (`perf`)."""

    async def start(self) -> float:
        """Join the group, hold partitions, start reading; the seconds the join took."""
        took = await join(self.consumer, name="bench")
        if self.from_end:
            await self.consumer.seek_to_end()
            for tp in self.consumer.assignment():
                await self.consumer.position(tp)
        self.task = asyncio.create_task(self._run(), name="bench-confirmations")
        return took

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=100, max_records=1000)
            now = perf()
            for tp, messages in batches.items():
                for m in messages:
                    at = m.timestamp / 1000 + self.wall_to_perf if m.timestamp > 0 else now
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        data = json.loads(m.value)["data"]
                        order_id = data["order_id"]
                        if tp.topic == FAILED:
                            self.failed[order_id].update(data["line_ids"])
                            continue
                        self.events[order_id] += 1
                        seen = self.confirmed[order_id]
                        for line in data["lines"]:
                            seen.setdefault(line["line_id"], at)

    def settled(self, order_id: str, lines: Iterable[str]) -> bool:
        """Every line confirmed or failed."""
        seen = self.confirmed.get(order_id, {})
        failed = self.failed.get(order_id, set())
        return all(ln in seen or ln in failed for ln in lines)

    def confirmed_at(self, order_id: str, lines: Iterable[str]) -> float | None:
        """When the last of the lines was confirmed (None: not all of them yet)."""
        seen = self.confirmed.get(order_id, {})
        times = [seen.get(ln) for ln in lines]
        return None if any(t is None for t in times) else max(t for t in times if t is not None)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()
