"""Whole polls per transaction against the real broker and databases: fewer transactions,
nothing lost or applied twice (poison messages, crashes mid-transaction, restarts)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from sqlalchemy import text

from shared.bus import BusConfig, KafkaBus, OutgoingMessage
from shared.consumer import (
    ConsumerRunner,
    MessageProcessor,
    PermanentError,
    RetryingDelivery,
    on,
    subscriptions,
)
from shared.db import create_engine, new_metadata, session_factory
from shared.events import Envelope, OrderCancelled, OrderPlaced, new_envelope
from shared.testing import eventually
from shared.uow import UnitOfWork
from tests.support.kafka import GROUP_TIMING

GROUP = "probe"


class Ledger:
    """What reached the consumer (before the inbox) and what it committed, repeats kept.

    `applied` is recorded after the commit returns; a task cancelled while its commit is on
    the wire may have committed without recording it. `committed(engine)` reads the same
    effects from the database, written in the transaction itself."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.applied: list[str] = []
        self.commits = 0
        self.polls: list[set[tuple[str, int]]] = []  # partitions of each poll's transaction
        self.dead: list[OutgoingMessage] = []


class LedgerUnitOfWork(UnitOfWork):
    def __init__(self, sessions, ledger: Ledger) -> None:  # type: ignore[no-untyped-def]
        super().__init__(sessions)
        self.ledger = ledger
        self.effects: list[str] = []

    async def commit(self) -> None:
        if self.effects:
            await self.session.execute(
                text("INSERT INTO effects (order_id) VALUES (:order_id)"),
                [{"order_id": e} for e in self.effects],
            )
        await super().commit()
        self.ledger.commits += 1
        self.ledger.applied += self.effects


class Recorder:
    """The DLQ publisher, keeping what it sent."""

    def __init__(self, bus: KafkaBus | None, ledger: Ledger) -> None:
        self.bus, self.ledger = bus, ledger

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.bus is not None:
            await self.bus.send_batch(messages)
        self.ledger.dead += messages


class Rig:
    def __init__(self, bus: KafkaBus, sessions, ledger: Ledger, **runner: float) -> None:  # type: ignore[no-untyped-def]
        self.bus, self.sessions, self.ledger = bus, sessions, ledger
        self.runner_options = runner
        self.block: asyncio.Event | None = None  # the handler waits on it at "ord_block"
        self.blocked = asyncio.Event()

    async def handle(self, envelope, data, uow: LedgerUnitOfWork) -> None:  # type: ignore[no-untyped-def]
        if data.order_id == "ord_poison":
            raise PermanentError("no supplier stocks it")
        if data.order_id == "ord_block" and self.block is not None:
            self.blocked.set()
            await self.block.wait()
        uow.effects.append(data.order_id)

    def start(self) -> asyncio.Task[None]:
        ledger = self.ledger
        processor = MessageProcessor(
            GROUP,
            subscriptions(on(OrderPlaced, self.handle), on(OrderCancelled, self.handle)),
            lambda: LedgerUnitOfWork(self.sessions, ledger),
        )
        process_many = processor.process_many

        async def seen(messages):  # type: ignore[no-untyped-def]
            ledger.delivered += [order_of(raw) for _, raw in messages]
            return await process_many(messages)

        processor.process_many = seen  # type: ignore[method-assign]
        delivery = RetryingDelivery(processor, Recorder(self.bus, ledger), backoff=0.05)
        deliver_poll = delivery.deliver_poll

        async def poll(records, finished):  # type: ignore[no-untyped-def]
            ledger.polls.append({(r.topic, r.partition) for r in records})
            await deliver_poll(records, finished)

        delivery.deliver_poll = poll  # type: ignore[method-assign]
        runner = ConsumerRunner(self.bus, delivery, **self.runner_options)  # type: ignore[arg-type]
        return asyncio.create_task(runner.run())


def order_of(raw: bytes | None) -> str:
    return str(Envelope.from_bytes(raw).payload().order_id)  # type: ignore[attr-defined]


def cancelled(order_id: str) -> bytes:
    return new_envelope(OrderCancelled(order_id=order_id, reason="customer asked")).to_bytes()


async def publish(bootstrap: str, by_partition: dict[int, list[str]], topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for partition, orders in by_partition.items():
            for order_id in orders:
                value = cancelled(order_id)
                await producer.send_and_wait(
                    topic, value, key=order_id.encode(), partition=partition
                )
    finally:
        await producer.stop()


async def _setup(database_url, broker, **bus: int):  # type: ignore[no-untyped-def]
    engine = create_engine(await database_url("consumer"))
    async with engine.begin() as conn:
        await conn.run_sync(new_metadata().create_all)
        await conn.execute(text("CREATE TABLE effects (order_id TEXT NOT NULL)"))
    bus = KafkaBus(BusConfig(broker.bootstrap, "test", **{**GROUP_TIMING, **bus}))
    await bus.connect()
    return engine, session_factory(engine), bus


async def committed(engine) -> list[str]:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return list((await conn.execute(text("SELECT order_id FROM effects"))).scalars())


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_poll_spanning_partitions_is_applied_in_one_transaction(database_url, broker):
    engine, sessions, bus = await _setup(database_url, broker)
    ledger = Ledger()
    orders = {p: [f"ord_{p}_{i}" for i in range(3)] for p in range(8)}
    await publish(broker.bootstrap, orders, "order-cancelled")
    rig = Rig(bus, sessions, ledger, linger_ms=300)
    task = rig.start()
    try:
        expected = sorted(o for os in orders.values() for o in os)
        await eventually(lambda: _is(sorted(ledger.applied) == expected), what="all applied")
        assert ledger.commits == len(ledger.polls), "one transaction per poll"
        assert ledger.commits < 8, f"24 events on 8 partitions took {ledger.commits} transactions"
        assert max(len(p) for p in ledger.polls) > 1, "a transaction spanned partitions"
    finally:
        await stop(task)
        await bus.close()
        await engine.dispose()


async def test_a_long_linger_gathers_a_trickle_into_one_transaction(database_url, broker):
    """Each fetch returns on the first arrival: the runner keeps asking until its linger is
    up, so events arriving one by one over a few hundred ms share one transaction."""
    engine, sessions, bus = await _setup(database_url, broker)
    ledger = Ledger()
    task = Rig(bus, sessions, ledger, linger_ms=1500).start()
    try:
        await publish(broker.bootstrap, {0: ["ord_warm"]}, "order-cancelled")
        await eventually(lambda: _is(ledger.applied == ["ord_warm"]), what="joined")
        before = ledger.commits
        trickle = [f"ord_t{i}" for i in range(8)]
        for i, order_id in enumerate(trickle):  # one at a time, 40 ms apart, partition by partition
            await publish(broker.bootstrap, {i: [order_id]}, "order-cancelled")
            await asyncio.sleep(0.04)  # pacing the producer, not synchronisation
        await eventually(lambda: _is(len(ledger.applied) == 9), what="the trickle applied")
        assert Counter(ledger.applied) == Counter(["ord_warm", *trickle]), "each once"
        assert ledger.commits - before <= 2, f"8 trickled events: {ledger.commits - before} txns"
    finally:
        await stop(task)
        await bus.close()
        await engine.dispose()


async def test_a_fetch_the_broker_holds_loses_nothing_and_still_applies_a_lone_event(
    database_url, broker
):
    """With a fetch min bytes no trickle reaches (notify's and metrics' default), the
    broker holds each fetch until its wait is up: a stream of events is still applied,
    each once, and a single event arriving alone, which never makes up the min bytes,
    is applied too (the wait, 0.5 s, ends its fetch; the deadline here is 30 s)."""
    engine, sessions, bus = await _setup(
        database_url, broker, fetch_min_bytes=1024 * 1024, fetch_max_wait_ms=500
    )
    ledger = Ledger()
    task = Rig(bus, sessions, ledger, linger_ms=0).start()
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    try:
        await publish(broker.bootstrap, {0: ["ord_hwarm"]}, "order-cancelled")
        await eventually(lambda: _is(ledger.applied == ["ord_hwarm"]), what="joined")
        stream = [f"ord_h{i}" for i in range(50)]
        for order_id in stream:  # one at a time, each acknowledged before the next
            key = order_id.encode()
            await producer.send_and_wait("order-cancelled", cancelled(order_id), key=key)
        await eventually(lambda: _is(len(ledger.applied) == 51), what="the stream applied")
        assert Counter(ledger.applied) == Counter(["ord_hwarm", *stream]), "each once"
        await publish(broker.bootstrap, {3: ["ord_hlone"]}, "order-cancelled")
        await eventually(lambda: _is("ord_hlone" in ledger.applied), what="a lone event")
        assert ledger.applied.count("ord_hlone") == 1
    finally:
        await producer.stop()
        await stop(task)
        await bus.close()
        await engine.dispose()


async def test_a_poison_message_costs_only_itself_and_offsets_move_past_everything(
    database_url, broker
):
    engine, sessions, bus = await _setup(database_url, broker)
    ledger = Ledger()
    orders = {0: ["ord_a1", "ord_poison", "ord_a2"], 1: ["ord_b1", "ord_b2"], 5: ["ord_c1"]}
    await publish(broker.bootstrap, orders, "order-cancelled")
    rig = Rig(bus, sessions, ledger, linger_ms=300)
    task = rig.start()
    good = ["ord_a1", "ord_a2", "ord_b1", "ord_b2", "ord_c1"]
    try:
        await eventually(lambda: _is(len(ledger.applied) >= 5 and ledger.dead), what="done")
        assert Counter(ledger.applied) == Counter(good), "each good event applied exactly once"
        [letter] = ledger.dead
        assert letter.topic == "order-cancelled.dlq"
    finally:
        await stop(task)  # commits what finished
    # a new member of the group starts where the first stopped: nothing is read again
    delivered = len(ledger.delivered)
    await publish(broker.bootstrap, {3: ["ord_after"]}, "order-cancelled")
    task = Rig(bus, sessions, ledger).start()
    try:
        await eventually(lambda: _is("ord_after" in ledger.applied), what="the next event")
        assert ledger.delivered[delivered:] == ["ord_after"], "offsets were committed"
        assert Counter(ledger.applied) == Counter([*good, "ord_after"])
    finally:
        await stop(task)
        await bus.close()
        await engine.dispose()


async def test_a_crash_mid_transaction_loses_nothing_and_applies_nothing_twice(
    database_url, broker
):
    # The cancellation is the crash, so it can land while a commit is on the wire: the
    # transaction commits, the ledger never hears of it. What was applied is read from the
    # database, where the effects are written in the same transaction.
    engine, sessions, bus = await _setup(database_url, broker)
    ledger = Ledger()
    first = {p: [f"ord_{p}_0"] for p in range(8)}
    await publish(broker.bootstrap, first, "order-cancelled")
    rig = Rig(bus, sessions, ledger)
    task = rig.start()
    try:
        await eventually(lambda: _is(len(ledger.applied) == 8), what="first wave applied")
        rig.block = asyncio.Event()  # the next transaction hangs half-way, then the process dies
        second = {p: [f"ord_{p}_1", "ord_block" if p == 4 else f"ord_{p}_2"] for p in range(8)}
        await publish(broker.bootstrap, second, "order-cancelled")
        await asyncio.wait_for(rig.blocked.wait(), 30)
    finally:
        await stop(task)  # the crash: the open transaction is rolled back
    assert "ord_block" not in await committed(engine), "the hung transaction never committed"

    rig = Rig(bus, sessions, ledger)
    task = rig.start()
    try:
        expected = [o for os in (*first.values(), *second.values()) for o in os]
        want = Counter(expected)

        async def applied_once() -> bool:
            return Counter(await committed(engine)) == want

        await eventually(applied_once, what="every event applied exactly once after the restart")
    finally:
        await stop(task)
        await bus.close()
        await engine.dispose()


async def _is(value: object) -> object:
    return value


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_two_replicas_deadlocking_on_postgresql_both_get_through(
    database_url, backend, caplog
):
    """Replica 1's poll applies x then y in one transaction, replica 2's y then x (as when
    one order's events on two topics go to two replicas): PostgreSQL aborts one with a
    deadlock; its events are retried, never dead-lettered, and each applies exactly once."""
    caplog.set_level(logging.INFO, logger="shared.consumer.delivery")
    engine = create_engine(await database_url("consumer"))
    async with engine.begin() as conn:
        await conn.run_sync(new_metadata().create_all)
        await conn.execute(text("CREATE TABLE stock (sku TEXT PRIMARY KEY, n INT NOT NULL)"))
        await conn.execute(text("INSERT INTO stock VALUES ('x', 0), ('y', 0)"))
    sessions = session_factory(engine)
    both_hold_one = asyncio.Barrier(2)
    waits = 0

    async def take(envelope, data, uow) -> None:  # type: ignore[no-untyped-def]
        nonlocal waits
        sku = {"row_x": "x", "row_y": "y"}[data.order_id]
        await uow.session.execute(text("UPDATE stock SET n = n + 1 WHERE sku = :s"), {"s": sku})
        if waits < 2:  # the first row of each transaction: wait until both hold one
            waits += 1
            await both_hold_one.wait()

    ledger = Ledger()

    def replica() -> RetryingDelivery:
        processor = MessageProcessor(
            GROUP, subscriptions(on(OrderCancelled, take)), lambda: UnitOfWork(sessions)
        )
        return RetryingDelivery(processor, Recorder(bus=None, ledger=ledger), max_attempts=1)

    def at(partition: int, order_id: str) -> ConsumerRecord[bytes, bytes]:
        value = cancelled(order_id)
        return ConsumerRecord("order-cancelled", partition, 0, 0, 0, b"", value, None, 0, 0, [])

    finished: list[int] = []

    def done(part) -> None:  # type: ignore[no-untyped-def]
        finished.append(part[-1].partition)

    try:
        await asyncio.wait_for(
            asyncio.gather(
                replica().deliver_poll([at(0, "row_x"), at(1, "row_y")], done),
                replica().deliver_poll([at(2, "row_y"), at(3, "row_x")], done),
            ),
            60,
        )
        async with engine.connect() as conn:
            stock = dict((await conn.execute(text("SELECT sku, n FROM stock"))).all())
        victims = [r for r in caplog.records if "eadlock" in str(getattr(r, "error", ""))]
        assert victims, "PostgreSQL saw a deadlock (else this test proves nothing)"
        assert stock == {"x": 2, "y": 2}, "each event applied exactly once"
        assert ledger.dead == [], "a deadlock victim did nothing wrong: never dead-lettered"
        assert sorted(finished) == [0, 1, 2, 3]
    finally:
        await engine.dispose()
