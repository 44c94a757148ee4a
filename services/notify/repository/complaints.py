"""Complaint watches: each complaint's response and resolution targets, locked per complaint."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.domain import ComplaintWatch
from services.notify.tables import complaint_watch
from shared.db import aware, dialect_insert
from shared.events import Severity


def _watch(row: Row[Any]) -> ComplaintWatch:
    return ComplaintWatch(
        complaint_id=row.complaint_id,
        order_id=row.order_id,
        tier=Severity(row.tier) if row.tier else None,
        filed_at=aware(row.filed_at),
        respond_by=aware(row.respond_by),
        resolve_by=aware(row.resolve_by),
        responded_at=aware(row.responded_at),
        resolved_at=aware(row.resolved_at),
        resolution_alerted_at=aware(row.resolution_alerted_at),
    )


class ComplaintWatches:
    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def lock(self, complaint_id: str) -> ComplaintWatch:
        """The complaint's watch, created if new, its row locked: the filing, response and
        resolution (three topics, three consumers) of one complaint take turns."""
        await self.session.execute(
            dialect_insert(self.dialect)(complaint_watch)
            .values(complaint_id=complaint_id)
            .on_conflict_do_nothing()
        )
        query = select(complaint_watch).where(complaint_watch.c.complaint_id == complaint_id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return _watch((await self.session.execute(query)).one())

    async def save(self, watch: ComplaintWatch) -> None:
        await self.session.execute(
            update(complaint_watch)
            .where(complaint_watch.c.complaint_id == watch.complaint_id)
            .values(
                order_id=watch.order_id,
                tier=watch.tier.value if watch.tier else None,
                filed_at=watch.filed_at,
                respond_by=watch.respond_by,
                resolve_by=watch.resolve_by,
                responded_at=watch.responded_at,
                resolved_at=watch.resolved_at,
                resolution_alerted_at=watch.resolution_alerted_at,
            )
        )

    async def unresolved_past(self, now: datetime, limit: int = 100) -> list[ComplaintWatch]:
        """Complaints past their resolution target that ops have not been told about, locked."""
        query = (
            select(complaint_watch)
            .where(
                complaint_watch.c.resolved_at.is_(None),
                complaint_watch.c.resolution_alerted_at.is_(None),
                complaint_watch.c.resolve_by <= now,
            )
            .order_by(complaint_watch.c.resolve_by)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return [_watch(row) for row in await self.session.execute(query)]
