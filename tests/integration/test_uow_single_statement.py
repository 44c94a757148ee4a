"""A unit of work of one statement, on real PostgreSQL and SQLite: PostgreSQL sends it
without BEGIN or COMMIT; the pooled connection is a transactional one again afterwards;
events cannot be emitted from it (their outbox rows would not share its fate)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import create_engine, inbox_table, new_metadata, outbox_table, session_factory
from shared.events import OrderCancelled, new_envelope
from shared.uow import UnitOfWork
from tests.support.round_trips import round_trips

pytestmark = pytest.mark.integration


def _event(order_id: str) -> Any:
    return new_envelope(OrderCancelled(order_id=order_id, reason="customer asked"))


@pytest.fixture
async def engine(database_url: Any) -> AsyncIterator[AsyncEngine]:
    # one connection, so every unit of work below reuses the same one from the pool
    engine = create_engine(await database_url("uow"), pool_size=1, max_overflow=0)
    async with engine.begin() as conn:
        await conn.run_sync(new_metadata().create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> Any:
    return session_factory(engine)


async def _claimed(sessions: Any) -> set[str]:
    async with sessions() as session:
        return set((await session.scalars(select(inbox_table.c.event_id))).all())


async def test_one_statement_then_a_transaction_on_the_same_connection(
    engine: AsyncEngine, sessions: Any, backend: str
) -> None:
    first, rolled_back = _event("ord_1"), _event("ord_2")
    with round_trips(engine) as sent:
        async with UnitOfWork(sessions) as uow:
            await uow.single_statement()
            assert await uow.claim_many("metrics", [first]) == [True]
            await uow.commit()
    # PostgreSQL: the claim alone; SQLite: BEGIN IMMEDIATE, the claim, in a transaction
    assert (sent.statements, sent.transactions) == ((1, 0) if backend == "postgresql" else (2, 1))
    assert await _claimed(sessions) == {first.id}

    async with UnitOfWork(sessions) as uow:  # the same pooled connection, transactional again
        assert await uow.claim_many("metrics", [rolled_back]) == [True]
        assert await uow.claim_many("notify", [rolled_back]) == [True]
        # left without commit: both claims go back
    assert await _claimed(sessions) == {first.id}


async def test_a_single_statement_unit_of_work_cannot_emit(sessions: Any) -> None:
    async with UnitOfWork(sessions) as uow:
        await uow.single_statement()
        uow.emit(OrderCancelled(order_id="ord_1", reason="customer asked"))
        with pytest.raises(RuntimeError, match="cannot emit"):
            await uow.commit()
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(outbox_table)) == 0
