"""The inbox claim on real PostgreSQL and SQLite: one fixed statement per batch that says,
per event, whether this consumer sees it for the first time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from shared.db import create_engine, inbox_table, new_metadata, session_factory
from shared.events import Envelope, OrderCancelled, new_envelope
from shared.uow import UnitOfWork


def _event(order_id: str) -> Envelope:
    return new_envelope(OrderCancelled(order_id=order_id, reason="customer asked"))


async def test_a_batch_claim_is_fresh_once_per_consumer_and_event(database_url) -> None:  # type: ignore[no-untyped-def]
    engine = create_engine(await database_url("inbox"))
    async with engine.begin() as conn:
        await conn.run_sync(new_metadata().create_all)
    sessions = session_factory(engine)
    seen, new, other = _event("ord_1"), _event("ord_2"), _event("ord_3")
    before = datetime.now(UTC)
    try:
        async with UnitOfWork(sessions) as uow:
            assert await uow.claim_many("metrics", [seen]) == [True]
            await uow.commit()
        async with UnitOfWork(sessions) as uow:
            # already seen; new (twice in the batch: fresh the first time only); and an
            # event another consumer group claimed is still fresh here
            claimed = await uow.claim_many("metrics", [seen, new, new, other])
            assert claimed == [False, True, False, True]
            assert await uow.claim_many("notify", [other]) == [True]
            await uow.commit()
        async with UnitOfWork(sessions) as uow:
            assert await uow.claim_many("metrics", []) == []
            rolled_back = _event("ord_4")
            assert await uow.claim_many("metrics", [rolled_back]) == [True]
            # not committed: the claim goes with the transaction
        async with UnitOfWork(sessions) as uow:
            assert await uow.claim_many("metrics", [rolled_back]) == [True]
            await uow.commit()
        async with sessions() as session:
            rows = (await session.execute(select(inbox_table))).all()
        stored = {(r.consumer, r.event_id): r for r in rows}
        assert set(stored) == {
            ("metrics", seen.id),
            ("metrics", new.id),
            ("metrics", other.id),
            ("notify", other.id),
            ("metrics", rolled_back.id),
        }
        for row in rows:
            assert row.topic == "order-cancelled"
            # read back through SQLAlchemy as the moment it was claimed (SQLite: naive UTC)
            moment = row.processed_at.replace(tzinfo=row.processed_at.tzinfo or UTC)
            assert before - timedelta(seconds=1) <= moment <= datetime.now(UTC)
    finally:
        await engine.dispose()
