"""Metrics service tables and unit of work."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite

from shared.db import new_metadata
from shared.uow import UnitOfWork

metadata = new_metadata()

event_tally = Table(
    "event_tally",
    metadata,
    Column("event_type", String(64), primary_key=True),
    Column("count", BigInteger, nullable=False),
)


class MetricsUnitOfWork(UnitOfWork):
    async def count_event(self, event_type: str) -> None:
        module = postgresql if self.dialect == "postgresql" else sqlite
        stmt = module.insert(event_tally).values(event_type=event_type, count=1)
        stmt = stmt.on_conflict_do_update(
            index_elements=[event_tally.c.event_type], set_={"count": event_tally.c.count + 1}
        )
        await self.session.execute(stmt)

    async def tallies(self) -> dict[str, int]:
        rows = await self.session.execute(select(event_tally.c.event_type, event_tally.c.count))
        return {event_type: int(n) for event_type, n in rows.tuples()}
