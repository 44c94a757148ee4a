"""Two outbox relays never publish at once (review finding 11d): a leader whose lock
connection dropped (a PostgreSQL restart ends its session and the lock with it) stops
before another relay takes over."""

from __future__ import annotations

import asyncio
import zlib

import pytest
from sqlalchemy import text

from shared.bus import OutgoingMessage
from shared.db import create_engine, new_metadata, session_factory
from shared.events import OrderCancelled
from shared.outbox import OutboxRelay
from shared.testing import eventually
from shared.uow import UnitOfWork

pytestmark = pytest.mark.integration


class Recorder:
    """A publisher that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send_batch(self, messages: list[OutgoingMessage]) -> None:
        self.sent.extend(m.key for m in messages)


async def _emit(sessions, order_id: str) -> None:
    async with UnitOfWork(sessions) as uow:
        uow.emit(OrderCancelled(order_id=order_id, reason="test"))
        await uow.commit()


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_a_leader_that_lost_its_lock_stops_before_another_takes_over(database_url):
    url = await database_url("producer")
    engines = [create_engine(url) for _ in range(3)]
    async with engines[0].begin() as conn:
        await conn.run_sync(new_metadata().create_all)
    sessions = [session_factory(e) for e in engines]
    first_out, second_out = Recorder(), Recorder()
    first = OutboxRelay("producer", engines[0], sessions[0], first_out, poll_interval=0.2)
    second = OutboxRelay("producer", engines[1], sessions[1], second_out, poll_interval=0.2)
    tasks = [asyncio.create_task(first.run())]
    try:
        await eventually(lambda: _true(first.leading), what="the first relay leads")
        await _emit(sessions[2], "ord_before")
        await eventually(lambda: _true(first_out.sent == [b"ord_before"]))
        await eventually(lambda: _marked(engines[2]), what="ord_before marked published")

        # the database ends the leader's lock session (as a restart would) and another
        # relay (here the test itself) takes the lock at once; the leader's pool still
        # works, so only the lock can tell it that it no longer leads
        key = zlib.crc32(b"outbox-relay:producer")
        async with engines[2].connect() as other:
            await other.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks"
                    " WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
                    " AND database = (SELECT oid FROM pg_database"
                    " WHERE datname = current_database())"  # not another test's relay
                )
            )
            taken = await eventually(
                lambda: _try_lock(other, key), what="the other relay takes the lock"
            )
            assert taken
            for n in range(5):
                await _emit(sessions[2], f"ord_after_{n}")
                first.wake()
            await eventually(lambda: _true(not first.leading), what="the old leader stands by")
            await asyncio.sleep(1.0)  # a window in which a relay without the lock might publish
            assert first_out.sent == [b"ord_before"], "the old leader published without its lock"
            await other.execute(text("SELECT pg_advisory_unlock_all()"))
            await other.commit()
        tasks.append(asyncio.create_task(second.run()))
        # whoever leads next publishes each row once
        await eventually(lambda: _true(len(first_out.sent) + len(second_out.sent) == 6), timeout=30)
        assert sorted(first_out.sent[1:] + second_out.sent) == [
            f"ord_after_{n}".encode() for n in range(5)
        ]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for engine in engines:
            await engine.dispose()


async def _true(value: bool) -> bool:
    return value


async def _try_lock(conn, key: int) -> bool:
    taken = await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key})
    await conn.commit()
    return bool(taken)


async def _marked(engine) -> bool:
    """Every outbox row marked published (the relay marks up to its mark delay later; a
    row left unmarked when the lock goes is published again by the next leader)."""
    async with engine.connect() as conn:
        return not await conn.scalar(
            text("SELECT count(*) FROM outbox_event WHERE published_at IS NULL")
        )
