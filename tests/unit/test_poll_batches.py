"""Whole polls per transaction: how a poll is cut, and what a failing one falls back to."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

from aiokafka import ConsumerRecord, TopicPartition
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared import tracing
from shared.bus import OutgoingMessage
from shared.consumer import (
    MessageProcessor,
    PermanentError,
    RetryingDelivery,
    event_span,
    on,
    subscriptions,
)
from shared.consumer.runner import plan_lanes
from shared.events import Envelope, OrderPlaced, PlacedLine, new_envelope
from shared.testing import eventually


def record(partition: int, offset: int, value: bytes = b"", *, topic: str = "order-placed", ts=0):
    key = f"ord_{partition}".encode()
    return ConsumerRecord(topic, partition, offset, ts or offset, 0, key, value, None, 0, 0, [])


def poll(**partitions: list[int]) -> dict[TopicPartition, list[ConsumerRecord]]:
    """`p3=[10, 11]` -> partition 3 of order-placed holds offsets 10 and 11."""
    return {
        TopicPartition("order-placed", int(p[1:])): [record(int(p[1:]), o) for o in offsets]
        for p, offsets in partitions.items()
    }


def offsets_by_partition(transaction) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for r in transaction:
        out.setdefault(r.partition, []).append(r.offset)
    return out


def test_a_moderate_poll_over_every_partition_is_one_transaction():
    polled = poll(**{f"p{p}": [10 * p, 10 * p + 1] for p in range(8)})
    [[transaction]] = plan_lanes(polled, batch_size=100)
    assert len(transaction) == 16
    assert offsets_by_partition(transaction) == {p: [10 * p, 10 * p + 1] for p in range(8)}


def test_partitions_keep_offset_order_even_when_timestamps_disagree():
    late_first = [record(0, 5, ts=900), record(0, 6, ts=100)]  # a clock stepped back
    other = [record(1, 1, ts=500)]
    [[transaction]] = plan_lanes(
        {TopicPartition("order-placed", 0): late_first, TopicPartition("order-placed", 1): other},
        batch_size=10,
    )
    assert offsets_by_partition(transaction)[0] == [5, 6]


def test_events_of_two_topics_apply_in_publish_order():
    placed = [record(2, 7, topic="order-placed", ts=1000)]
    cancelled = [record(2, 3, topic="order-cancelled", ts=2000)]
    [[transaction]] = plan_lanes(
        {
            TopicPartition("order-cancelled", 2): cancelled,
            TopicPartition("order-placed", 2): placed,
        },
        batch_size=10,
    )
    assert [r.topic for r in transaction] == ["order-placed", "order-cancelled"]


def test_a_big_poll_is_cut_into_lanes_that_never_share_a_partition():
    polled = poll(p0=list(range(250)), p1=list(range(60)), p2=list(range(60)), p3=[1])
    lanes = plan_lanes(polled, batch_size=100)
    seen: list[int] = []
    for lane in lanes:
        in_lane = {r.partition for txn in lane for r in txn}
        assert not in_lane & set(seen), "a partition in two lanes could lose its order"
        seen += in_lane
        for txn in lane:
            assert len(txn) <= 100
    assert sorted(seen) == [0, 1, 2, 3]
    [big] = [lane for lane in lanes if lane[0][0].partition == 0]
    assert [[r.offset for r in txn] for txn in big] == [
        list(range(100)),
        list(range(100, 200)),
        list(range(200, 250)),
    ]


def test_one_event_per_transaction_keeps_partitions_side_by_side():
    lanes = plan_lanes(poll(p0=[1], p1=[1], p2=[1]), batch_size=1)
    assert len(lanes) == 3 and all(len(lane) == 1 and len(lane[0]) == 1 for lane in lanes)


class Store:
    def __init__(self) -> None:
        self.inbox: set[str] = set()
        self.applied: list[str] = []  # every committed application, repeats included
        self.commits = 0
        self.fail_commits: list[BaseException] = []


class FakeUnitOfWork:
    """Inbox and effects committed together; anything uncommitted is rolled back."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._claims: list[str] = []
        self._effects: list[str] = []

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._claims, self._effects = [], []

    async def claim_many(self, consumer: str, envelopes) -> list[bool]:
        fresh = [e.id not in self.store.inbox and e.id not in self._claims for e in envelopes]
        self._claims += [e.id for e in envelopes]
        return fresh

    async def commit(self) -> None:
        if self.store.fail_commits:
            raise self.store.fail_commits.pop(0)  # the crash: nothing of this transaction stays
        self.store.inbox |= set(self._claims)
        self.store.applied += self._effects
        self.store.commits += 1


class Sent:
    def __init__(self) -> None:
        self.messages: list[OutgoingMessage] = []

    async def send_batch(self, messages) -> None:
        self.messages += messages


def placed(order_id: str) -> bytes:
    data = OrderPlaced(
        order_id=order_id,
        channel="storefront",
        currency="USD",
        lines=[PlacedLine(line_id="l1", sku="MUG", quantity=1, unit_price=Decimal("5.00"))],
        shipping_country="US",
        shipping_postal_code="10001",
        placed_at=datetime.now(UTC),
    )
    return new_envelope(data).to_bytes()


def setup(handler, *, max_attempts: int = 3):
    store, sent = Store(), Sent()

    async def apply(envelope, data, uow) -> None:
        await handler(data.order_id)
        uow._effects.append(data.order_id)

    processor = MessageProcessor(
        "probe", subscriptions(on(OrderPlaced, apply)), lambda: FakeUnitOfWork(store)
    )
    delivery = RetryingDelivery(processor, sent, max_attempts=max_attempts, backoff=0)
    return delivery, store, sent


def spanning(orders: dict[int, list[str]]) -> list[ConsumerRecord]:
    """Records of several partitions in one poll, offsets from 0 in each."""
    return [record(p, i, placed(o)) for p, os in orders.items() for i, o in enumerate(os)]


async def finishing(delivery: RetryingDelivery, records) -> dict[int, int]:
    finished: dict[int, int] = {}

    def done(part) -> None:
        assert part[-1].partition not in finished, "a partition finished twice"
        finished[part[-1].partition] = part[-1].offset + 1

    await delivery.deliver_poll(records, done)
    return finished


async def nothing(order_id: str) -> None:
    return None


async def test_a_poll_spanning_partitions_is_one_transaction():
    delivery, store, _ = setup(nothing)
    orders = {p: [f"ord_{p}_{i}" for i in range(2)] for p in range(8)}
    finished = await finishing(delivery, spanning(orders))
    assert store.commits == 1
    assert sorted(store.applied) == sorted(o for os in orders.values() for o in os)
    assert finished == {p: 2 for p in range(8)}, "every partition's offset moves on"


async def test_a_poison_message_costs_other_partitions_nothing_and_is_dead_lettered():
    async def handler(order_id: str) -> None:
        if order_id == "ord_poison":
            raise PermanentError("no supplier stocks it")

    delivery, store, sent = setup(handler)
    orders = {0: ["ord_a1", "ord_poison", "ord_a2"], 1: ["ord_b1", "ord_b2"], 2: ["ord_c1"]}
    finished = await finishing(delivery, spanning(orders))
    good = ["ord_a1", "ord_a2", "ord_b1", "ord_b2", "ord_c1"]
    assert Counter(store.applied) == Counter(good), "each good event applied exactly once"
    [letter] = sent.messages
    assert letter.topic == "order-placed.dlq"
    assert dict(letter.headers)["dlq.original_offset"] == b"1"
    assert finished == {0: 3, 1: 2, 2: 1}, "offsets past the poison, and past the others"


async def test_a_partition_retrying_a_bad_message_does_not_hold_the_others_back():
    release = asyncio.Event()
    calls = Counter[str]()

    async def handler(order_id: str) -> None:
        calls[order_id] += 1
        if order_id == "ord_slow" and calls[order_id] > 1:  # retried on its own: takes long
            await release.wait()
            raise RuntimeError("downstream hiccup")
        if order_id == "ord_slow":
            raise RuntimeError("downstream hiccup")

    delivery, store, sent = setup(handler, max_attempts=2)
    finished: dict[int, int] = {}
    records = spanning({0: ["ord_slow"], 1: ["ord_b1", "ord_b2"]})
    task = asyncio.create_task(
        delivery.deliver_poll(records, lambda part: finished.setdefault(part[-1].partition, 1))
    )

    async def other_done() -> bool:
        return 1 in finished

    await eventually(other_done, timeout=5, what="partition 1 finished while 0 still retries")
    assert 0 not in finished and sorted(store.applied) == ["ord_b1", "ord_b2"]
    release.set()
    await task
    assert finished.keys() == {0, 1} and len(sent.messages) == 1


async def test_a_deadlocked_poll_is_retried_and_nothing_is_dead_lettered():
    class Deadlock(Exception):
        def __init__(self) -> None:
            super().__init__("deadlock detected")
            self.orig = type("Orig", (), {"sqlstate": "40P01"})()

    delivery, store, sent = setup(nothing, max_attempts=1)
    # the poll's transaction and every partition's retry of it lose to another replica
    store.fail_commits = [Deadlock(), Deadlock(), Deadlock(), Deadlock()]
    orders = {0: ["ord_a"], 1: ["ord_b"], 2: ["ord_c"]}
    finished = await finishing(delivery, spanning(orders))
    assert sorted(store.applied) == ["ord_a", "ord_b", "ord_c"]
    assert sent.messages == [], "a deadlock victim did nothing wrong"
    assert finished == {0: 1, 1: 1, 2: 1}


async def test_a_crash_at_commit_loses_nothing_and_applies_nothing_twice():
    delivery, store, sent = setup(nothing)
    store.fail_commits = [ConnectionResetError("database went away at COMMIT")]
    orders = {p: [f"ord_{p}_{i}" for i in range(3)] for p in range(4)}
    records = spanning(orders)
    finished = await finishing(delivery, records)
    assert Counter(store.applied) == Counter(o for os in orders.values() for o in os)
    assert finished == {p: 3 for p in range(4)} and sent.messages == []

    # the same poll delivered again (offsets not yet committed when the process died)
    again = await finishing(delivery, records)
    assert again == finished
    assert len(store.applied) == 12, "the repeat was recognised by the inbox"


CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def traced_batch(tracer: tracing.Tracing):
    """A batch processor whose handler notes what each event's emits would carry."""
    emitted: dict[str, str] = {}

    async def batch(events, uow) -> None:
        for envelope, data in events:
            with event_span(envelope):
                emitted[data.order_id] = tracing.for_event()

    async def one(envelope, data, uow) -> None:  # pragma: no cover - the batch handles all
        raise AssertionError("the batch handler takes every event")

    processor = MessageProcessor(
        "probe",
        subscriptions(on(OrderPlaced, one)),
        lambda: FakeUnitOfWork(Store()),
        batch_handler=batch,
        tracer=tracer,
    )
    return processor, emitted


def caller_placed(order_id: str) -> bytes:
    envelope = Envelope.from_bytes(placed(order_id))
    return envelope.model_copy(update={"traceparent": CALLER}).to_bytes()


async def test_a_batch_handler_emits_in_each_events_trace_with_nothing_recorded():
    processor, emitted = traced_batch(tracing.Tracing("supplier"))
    await processor.process_many(
        [("order-placed", caller_placed("ord_a")), ("order-placed", placed("ord_b"))]
    )
    assert emitted["ord_a"].split("-")[1] == CALLER.split("-")[1], "the caller's trace goes on"
    assert emitted["ord_a"].split("-")[2] != CALLER.split("-")[2], "under a span of its own"
    assert emitted["ord_b"].split("-")[1] != CALLER.split("-")[1], "each event its own trace"
    assert tracing.current() is None, "nothing stays current after the batch"


async def test_a_batch_handler_emits_under_each_events_recorded_consumer_span():
    exporter = InMemorySpanExporter()
    tracer = tracing.Tracing("supplier")
    tracer.export_to(exporter)
    processor, emitted = traced_batch(tracer)
    await processor.process_many([("order-placed", caller_placed("ord_a"))])
    tracer.shutdown()
    [span] = exporter.get_finished_spans()
    assert span.name == "order-placed process"
    assert emitted["ord_a"] == tracing.format_traceparent(span.context)
