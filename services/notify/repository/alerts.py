"""Ops alerts: raised once per dedupe key, escalated until acknowledged."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.domain import Alert, AlertKind
from services.notify.tables import alert
from shared.db import aware, dialect_insert
from shared.events import Severity


def _alert(row: Row[Any]) -> Alert:
    return Alert(
        id=row.id,
        dedupe_key=row.dedupe_key,
        kind=AlertKind(row.kind),
        severity=Severity(row.severity),
        order_id=row.order_id,
        title=row.title,
        lines=list(row.details.get("lines", [])),
        raised_at=aware(row.raised_at) or row.raised_at,
        due_at=aware(row.due_at) or row.due_at,
        escalations=row.escalations,
        acked_at=aware(row.acked_at),
        acked_by=row.acked_by,
    )


class Alerts:
    """Ops alerts, unique per dedupe key, escalating until acknowledged."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def add(self, new: Alert) -> bool:
        """Record an alert; False if one with its dedupe key exists (raised before)."""
        stmt = (
            dialect_insert(self.dialect)(alert)
            .values(
                id=new.id,
                dedupe_key=new.dedupe_key[:200],
                kind=new.kind.value,
                severity=new.severity.value,
                order_id=new.order_id,
                title=new.title,
                details={"lines": new.lines},
                raised_at=new.raised_at,
                due_at=new.due_at,
                escalations=new.escalations,
            )
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0) == 1)

    async def get(self, alert_id: str, *, for_update: bool = False) -> Alert | None:
        query = select(alert).where(alert.c.id == alert_id)
        if for_update and self.dialect == "postgresql":
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return None if row is None else _alert(row)

    async def recent(self, *, open_only: bool, limit: int) -> list[Alert]:
        """Newest first."""
        query = select(alert)
        if open_only:
            query = query.where(alert.c.acked_at.is_(None))
        query = query.order_by(alert.c.raised_at.desc()).limit(limit)
        return [_alert(row) for row in await self.session.execute(query)]

    async def acknowledge(self, alert_id: str, by: str, now: datetime) -> bool:
        """Acknowledge unless acknowledged already (the first acknowledgement stands)."""
        result = await self.session.execute(
            update(alert)
            .where(alert.c.id == alert_id, alert.c.acked_at.is_(None))
            .values(acked_at=now, acked_by=by)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def acknowledge_key(self, dedupe_key: str, by: str, now: datetime) -> bool:
        """Acknowledge the alert raised under `dedupe_key`, if raised and still open."""
        result = await self.session.execute(
            update(alert)
            .where(alert.c.dedupe_key == dedupe_key[:200], alert.c.acked_at.is_(None))
            .values(acked_at=now, acked_by=by)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def overdue(self, now: datetime, limit: int = 100) -> list[Alert]:
        """Unacknowledged alerts past their response target, locked for escalation."""
        query = (
            select(alert)
            .where(alert.c.acked_at.is_(None), alert.c.due_at <= now)
            .order_by(alert.c.due_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return [_alert(row) for row in await self.session.execute(query)]

    async def save_escalation(self, escalated: Alert) -> None:
        await self.session.execute(
            update(alert)
            .where(alert.c.id == escalated.id)
            .values(
                severity=escalated.severity.value,
                escalations=escalated.escalations,
                due_at=escalated.due_at,
            )
        )
