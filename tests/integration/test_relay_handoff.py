"""The relay's in-memory hand-off: committed rows go out without being read back, yet a
lost hand-off loses nothing, a relay that does not lead publishes nothing, and the events
of one key keep commit order (PostgreSQL and SQLite)."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.bus import OutgoingMessage
from shared.db import create_engine, new_metadata, session_factory
from shared.events import Envelope, OrderCancelled
from shared.outbox import OutboxRelay
from shared.testing import eventually
from shared.uow import CommitHook, UnitOfWork

pytestmark = pytest.mark.integration


class Recorder:
    """A publisher that keeps (key, reason) of what it sent; can fail its first sends."""

    def __init__(self, fail_first: int = 0) -> None:
        self.sent: list[tuple[str, str]] = []
        self.sends = 0
        self.fail_first = fail_first

    async def send_batch(self, messages: Sequence[OutgoingMessage]) -> None:
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ConnectionError("broker away")
        self.sends += 1
        for m in messages:
            self.sent.append((m.key.decode(), Envelope.from_bytes(m.value).data["reason"]))

    def of(self, key: str) -> list[str]:
        return [reason for k, reason in self.sent if k == key]


async def _database(url: str):
    engine = create_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(new_metadata().create_all)
    return engine, session_factory(engine)


async def _emit(
    sessions, order_id: str, reasons: Sequence[str], *, hook: CommitHook | None, notify=False
) -> None:
    """Commit events; `notify`: NOTIFY the relays of other processes (PostgreSQL), as a
    unit of work does while its own process's relay does not lead."""
    async with UnitOfWork(sessions, on_commit=hook, notify_others=lambda: notify) as uow:
        for reason in reasons:
            uow.emit(OrderCancelled(order_id=order_id, reason=reason))
        await uow.commit()


async def _true(value: bool) -> bool:
    return value


async def _running(relay: OutboxRelay) -> asyncio.Task[None]:
    task = asyncio.create_task(relay.run())
    await eventually(lambda: _true(relay.leading), what="the relay leads")
    await eventually(lambda: _true(relay.passes > 0), what="the first pass is done")
    return task


@contextlib.asynccontextmanager
async def _leading(
    database_url, **options: Any
) -> AsyncIterator[tuple[AsyncEngine, Any, OutboxRelay, Recorder]]:
    """A fresh producer database and a relay leading on it, publishing to a `Recorder`;
    stopped and disposed on leaving."""
    engine, sessions = await _database(await database_url("producer"))
    out = Recorder()
    relay = OutboxRelay("producer", engine, sessions, out, **options)
    task = await _running(relay)
    try:
        yield engine, sessions, relay, out
    finally:
        await _stop(task)
        await engine.dispose()


async def _stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_handed_rows_go_out_unread_and_a_batch_is_marked_with_one_update(database_url):
    engine, sessions = await _database(await database_url("producer"))
    statements: list[str] = []
    event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, *_: statements.append(sql.split()[0].upper()),
    )
    out = Recorder()
    relay = OutboxRelay("producer", engine, sessions, out, poll_interval=300)
    task = await _running(relay)
    try:
        reasons = [f"r{i:02d}" for i in range(50)]
        statements.clear()
        await _emit(sessions, "ord_batch", reasons, hook=relay.wake)
        await eventually(lambda: _true(relay.published_total == 50), what="published, marked")
        assert out.of("ord_batch") == reasons
        assert relay.handed_published == 50, "published from memory, not read back"
        await eventually(lambda: _true(statements.count("UPDATE") == 1), what="marked")
        assert statements.count("UPDATE") == 1, "one statement marks the whole batch"
        assert await relay.backlog() == 0
    finally:
        await _stop(task)
        await engine.dispose()


async def test_a_lost_hand_off_is_read_from_the_table_before_newer_handed_rows(database_url):
    """A process that died between commit and hand-off, or another process's row: the
    newer handed row of the same key must not overtake it."""
    engine, sessions = await _database(await database_url("producer"))
    out = Recorder()
    relay = OutboxRelay("producer", engine, sessions, out, poll_interval=300)
    task = await _running(relay)
    try:
        # committed, never handed over and (PostgreSQL) no NOTIFY: only the table knows it
        await _emit(sessions, "ord_k", ["first"], hook=None, notify=False)
        await _emit(sessions, "ord_k", ["second"], hook=relay.wake)
        await eventually(lambda: _true(relay.published_total >= 2), what="both published")
        assert out.of("ord_k") == ["first", "second"]
        assert relay.handed_published == 0, "the hand-off gave way to a read of the table"
        await _emit(sessions, "ord_k", ["third"], hook=relay.wake)  # nothing older is missing
        await eventually(lambda: _true(relay.published_total >= 3), what="third published")
        assert out.of("ord_k") == ["first", "second", "third"]
        assert relay.handed_published == 1
        assert await relay.backlog() == 0
    finally:
        await _stop(task)
        await engine.dispose()


async def test_a_hand_off_that_failed_to_publish_goes_out_from_the_table(database_url):
    engine, sessions = await _database(await database_url("producer"))
    out = Recorder()
    relay = OutboxRelay("producer", engine, sessions, out, poll_interval=300)
    task = await _running(relay)
    try:
        out.fail_first = 1  # the broker refuses the handed batch once
        await _emit(sessions, "ord_retry", ["a", "b"], hook=relay.wake)
        await eventually(lambda: _true(relay.published_total >= 2), what="published on retry")
        assert out.of("ord_retry") == ["a", "b"]
        assert relay.handed_published == 0
        assert await relay.backlog() == 0
    finally:
        await _stop(task)
        await engine.dispose()


async def test_a_relay_that_does_not_lead_publishes_nothing_it_was_handed(database_url):
    url = await database_url("producer")
    engine, sessions = await _database(url)
    other_engine = create_engine(url)
    other_sessions = session_factory(other_engine)
    leader_out, standby_out = Recorder(), Recorder()
    leader = OutboxRelay("producer", engine, sessions, leader_out, poll_interval=0.2)
    standby = OutboxRelay("producer", other_engine, other_sessions, standby_out, poll_interval=0.2)
    leader_task = await _running(leader)
    standby_task = asyncio.create_task(standby.run())
    try:
        for n in range(5):  # committed in the standby's process, handed to the standby
            await _emit(
                other_sessions, f"ord_{n}", ["x"], hook=standby.wake, notify=not standby.leading
            )
        await eventually(lambda: _true(len(leader_out.sent) == 5), what="the leader publishes")
        assert not standby.leading and standby_out.sent == [] and standby.published_total == 0
        assert sorted(leader_out.sent) == [(f"ord_{n}", "x") for n in range(5)]
    finally:
        await _stop(leader_task, standby_task)
        await engine.dispose()
        await other_engine.dispose()


async def test_events_of_each_key_keep_commit_order_with_two_writing_processes(database_url):
    """Commits of one key serialise (in the services, on the order's row; here on a lock);
    this process hands its rows over, another process's rows are only in the table."""
    url = await database_url("producer")
    engine, sessions = await _database(url)
    other_engine = create_engine(url)
    other_sessions = session_factory(other_engine)
    out = Recorder()
    relay = OutboxRelay("producer", engine, sessions, out, poll_interval=0.2)
    task = await _running(relay)
    keys = [f"ord_{k}" for k in range(4)]
    locks = {k: asyncio.Lock() for k in keys}
    committed: dict[str, list[str]] = {k: [] for k in keys}
    rng = random.Random(15)

    async def writer(name: str, local: bool) -> None:
        for i in range(15):
            key = rng.choice(keys)
            async with locks[key]:
                reason = f"{name}-{i}"
                if local:
                    await _emit(sessions, key, [reason], hook=relay.wake)
                else:
                    await _emit(other_sessions, key, [reason], hook=None, notify=True)
                committed[key].append(reason)

    try:
        await asyncio.gather(writer("here", True), writer("here2", True), writer("there", False))
        await eventually(lambda: _true(relay.published_total >= 45), what="all published")
        for key in keys:
            assert out.of(key) == committed[key], f"{key} out of commit order"
        assert len(out.sent) == 45, "nothing published twice"
        assert await relay.backlog() == 0
    finally:
        await _stop(task)
        await engine.dispose()
        await other_engine.dispose()


async def test_with_a_linger_commits_close_behind_one_another_go_out_together(database_url):
    async with _leading(database_url, poll_interval=300, linger=0.5) as (_, sessions, relay, out):
        sends = out.sends
        for n in range(3):  # three requests' commits, well within the linger
            await _emit(sessions, f"ord_{n}", ["x"], hook=relay.wake)
        await eventually(lambda: _true(relay.published_total == 3), what="published, marked")
        assert out.sends - sends == 1, "one batch, one send, one UPDATE"
        assert relay.handed_published == 3


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_leader_that_lost_its_lock_publishes_nothing_it_was_handed(database_url):
    """The lock's session ends (a database restart) while rows are being handed over: the
    old leader must not publish them from memory; whoever leads next publishes them."""
    url = await database_url("producer")
    engine, sessions = await _database(url)
    other_engine = create_engine(url)
    old_out, new_out = Recorder(), Recorder()
    old = OutboxRelay("producer", engine, sessions, old_out, poll_interval=300)
    new = OutboxRelay(
        "producer", other_engine, session_factory(other_engine), new_out, poll_interval=0.2
    )
    tasks = [await _running(old)]
    try:
        async with other_engine.connect() as killer:  # end the old leader's lock session
            await killer.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"  # not another test's relay
                )
            )
            await killer.commit()
        for n in range(3):
            await _emit(sessions, f"ord_{n}", ["x"], hook=old.wake)
        await eventually(lambda: _true(not old.leading), what="the old leader stands down")
        tasks.append(asyncio.create_task(new.run()))
        await eventually(lambda: _true(len(old_out.sent) + len(new_out.sent) >= 3), timeout=30)
        assert old_out.sent == [], "published from memory without the lock"
        assert sorted(new_out.sent) == [(f"ord_{n}", "x") for n in range(3)]
    finally:
        await _stop(*tasks)
        await engine.dispose()
        await other_engine.dispose()


async def _unmarked(engine) -> list[str]:
    """Keys of the outbox rows not marked published."""
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT key FROM outbox_event WHERE published_at IS NULL"))
        return sorted(r[0] for r in rows)


async def test_batches_published_close_together_are_marked_with_one_statement(
    database_url, backend
):
    """Marks wait up to the mark delay: on PostgreSQL the first batch's mark rides on the
    second batch's lock check, on SQLite the two share one write; a stop marks the rest,
    and the backlog never counts a published row whose mark is still to come."""
    engine, sessions = await _database(await database_url("producer"))
    statements: list[str] = []
    event.listen(
        engine.sync_engine,
        "before_cursor_execute",
        lambda _c, _cur, sql, *_: statements.append(sql.split()[0].upper()),
    )
    out = Recorder()
    relay = OutboxRelay("producer", engine, sessions, out, poll_interval=300, mark_delay=60)
    task = await _running(relay)
    try:
        statements.clear()
        await _emit(sessions, "ord_first", ["a"], hook=relay.wake)
        await eventually(lambda: _true(relay.published_total == 1), what="first published")
        await _emit(sessions, "ord_second", ["b"], hook=relay.wake)
        await eventually(lambda: _true(relay.published_total == 2), what="second published")
        assert out.sent == [("ord_first", "a"), ("ord_second", "b")]
        assert statements.count("UPDATE") == 0, "no batch marked on its own"
        unmarked = await _unmarked(engine)
        if backend == "postgresql":
            assert unmarked == ["ord_second"], "the first batch marked with the second's check"
        else:
            assert unmarked == ["ord_first", "ord_second"], "marks wait for the delay"
        assert await relay.backlog() == 0, "a published row is not backlog"
    finally:
        await _stop(task)
    try:
        assert await _unmarked(engine) == [], "the relay marks what went out when it stops"
        assert statements.count("UPDATE") == 1, "the rest marked with one statement"
        assert out.sends == 2
    finally:
        await engine.dispose()


async def test_published_rows_are_marked_once_their_delay_is_up(database_url):
    options = {"poll_interval": 300, "mark_delay": 0.3}
    async with _leading(database_url, **options) as (engine, sessions, relay, out):
        await _emit(sessions, "ord_alone", ["a", "b"], hook=relay.wake)
        await eventually(lambda: _true(relay.published_total == 2), what="published")
        await eventually(lambda: _all_marked(engine), what="marked with no batch after it")
        assert relay.leading and out.sent == [("ord_alone", "a"), ("ord_alone", "b")]


async def _all_marked(engine: AsyncEngine) -> bool:
    return not await _unmarked(engine)


@pytest.mark.parametrize("mark_delay", [0.0, 5.0], ids=["marked", "not-yet-marked"])
async def test_a_row_handed_after_a_table_read_sent_it_goes_out_once(database_url, mark_delay):
    """A table read can run between a commit and its hand-off (another process's NOTIFY, a
    poll): the row it sent, handed over afterwards, must not go out again."""
    options = {"poll_interval": 300, "mark_delay": mark_delay}
    async with _leading(database_url, **options) as (_, sessions, relay, out):
        late: list[Any] = []
        await _emit(sessions, "ord_late", ["first"], hook=late.extend)  # not handed yet
        relay.wake()  # a table read: sends it
        await eventually(lambda: _true(relay.published_total == 1), what="sent by the read")
        relay.wake(late)  # the commit's hand-off, late
        await _emit(sessions, "ord_late", ["second"], hook=relay.wake)
        await eventually(lambda: _true(relay.published_total >= 2), what="second sent")
        assert out.of("ord_late") == ["first", "second"]
