"""Notify service unit of work: the notification log, alerts and the order facts notices need."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notify.domain import Policy, Status
from services.notify.tables import (
    alert,
    metadata,
    notification,
    order_fact,
    supplier_share,
    watch_state,
)
from shared.db import dialect_insert
from shared.uow import UnitOfWork

__all__ = ["NotifyUnitOfWork", "metadata"]


class NotifyUnitOfWork(UnitOfWork):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: Callable[[], None] | None = None,
        notify_others: Callable[[], bool] = lambda: True,
        *,
        policy: Policy | None = None,
        wake_sender: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(sessions, on_commit=on_commit, notify_others=notify_others)
        self.policy = policy or Policy()
        self._wake_sender = wake_sender
        self._queued = False

    async def commit(self) -> None:
        await super().commit()
        if self._queued and self._wake_sender is not None:
            self._wake_sender()
        self._queued = False

    def _insert(self) -> Any:
        return dialect_insert(self.dialect)

    # -- facts from events ---------------------------------------------------------------
    async def record_order(self, values: dict[str, Any]) -> None:
        stmt = self._insert()(order_fact).values(**values).on_conflict_do_nothing()
        await self.session.execute(stmt)

    async def record_share(
        self, order_id: str, supplier_id: str, line_ids: list[str], ship_by: datetime
    ) -> None:
        stmt = self._insert()(supplier_share).values(
            order_id=order_id, supplier_id=supplier_id, line_ids=line_ids, ship_by=ship_by
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[supplier_share.c.order_id, supplier_share.c.supplier_id],
            set_={"line_ids": line_ids, "ship_by": ship_by},
        )
        await self.session.execute(stmt)

    async def order_fact(self, order_id: str) -> Any:
        query = select(order_fact).where(order_fact.c.order_id == order_id)
        return (await self.session.execute(query)).first()

    async def share_lines(self, order_id: str, supplier_id: str) -> list[str] | None:
        query = select(supplier_share.c.line_ids).where(
            supplier_share.c.order_id == order_id, supplier_share.c.supplier_id == supplier_id
        )
        return (await self.session.execute(query)).scalar_one_or_none()

    # -- the notification log -------------------------------------------------------------
    async def queue(
        self,
        *,
        dedupe_key: str,
        channel: str,
        target: str,
        recipient_kind: str,
        order_id: str | None,
        kind: str,
        reason: str,
        template: str,
        details: dict[str, Any],
        not_before: datetime,
        alert_id: str | None = None,
        severity: str | None = None,
    ) -> bool:
        """Queue one send; False if this (dedupe key, channel, target) was queued before."""
        now = datetime.now(UTC)
        stmt = (
            self._insert()(notification)
            .values(
                id=str(uuid.uuid4()),
                dedupe_key=dedupe_key,
                channel=channel,
                target=target,
                recipient_kind=recipient_kind,
                order_id=order_id,
                kind=kind,
                reason=reason,
                alert_id=alert_id,
                severity=severity,
                template=template,
                status=Status.PENDING.value,
                attempts=0,
                next_attempt_at=not_before,
                details=details,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing()
        )
        result = await self.session.execute(stmt)
        fresh = bool(getattr(result, "rowcount", 0) == 1)
        self._queued = self._queued or fresh
        return fresh

    async def pending_with_key(self, dedupe_key: str) -> list[Any]:
        """Rows of a notice still waiting to go out (their details can still grow)."""
        query = select(notification).where(
            notification.c.dedupe_key == dedupe_key,
            notification.c.status == Status.PENDING.value,
            notification.c.attempts == 0,
        )
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return list(await self.session.execute(query))

    async def set_details(self, notification_id: str, details: dict[str, Any]) -> None:
        await self.session.execute(
            update(notification)
            .where(notification.c.id == notification_id)
            .values(details=details, updated_at=datetime.now(UTC))
        )

    async def claim_due(self, now: datetime, lease: timedelta, limit: int) -> list[Any]:
        """Take due sends (pending and due, or sending with an expired lease) under a lease."""
        query = (
            select(notification)
            .where(
                or_(
                    and_(
                        notification.c.status == Status.PENDING.value,
                        notification.c.next_attempt_at <= now,
                    ),
                    and_(
                        notification.c.status == Status.SENDING.value,
                        notification.c.lease_until < now,
                    ),
                )
            )
            .order_by(notification.c.next_attempt_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list(await self.session.execute(query))
        if rows:
            await self.session.execute(
                update(notification)
                .where(notification.c.id.in_([row.id for row in rows]))
                .values(
                    status=Status.SENDING.value,
                    lease_until=now + lease,
                    attempts=notification.c.attempts + 1,
                    updated_at=now,
                )
            )
        return rows

    async def finish(
        self,
        notification_id: str,
        status: Status,
        *,
        attempt: int,
        error: str | None = None,
        locale: str | None = None,
        recipient_hash: str | None = None,
    ) -> bool:
        """Record a terminal outcome; False if the row was no longer being sent by us.

        `attempt` fences the write: if our lease expired and another sender claimed the
        row (bumping `attempts`), our late outcome is dropped instead of overwriting its.
        """
        now = datetime.now(UTC)
        values: dict[str, Any] = {
            "status": status.value,
            "lease_until": None,
            "last_error": error,
            "updated_at": now,
        }
        if status is Status.SENT:
            values["sent_at"] = now
        if locale is not None:
            values["locale"] = locale
        if recipient_hash is not None:
            values["recipient_hash"] = recipient_hash
        result = await self.session.execute(
            update(notification)
            .where(
                notification.c.id == notification_id,
                notification.c.status == Status.SENDING.value,
                notification.c.attempts == attempt,
            )
            .values(**values)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def reschedule(
        self, notification_id: str, attempt: int, at: datetime, error: str
    ) -> None:
        await self.session.execute(
            update(notification)
            .where(
                notification.c.id == notification_id,
                notification.c.status == Status.SENDING.value,
                notification.c.attempts == attempt,
            )
            .values(
                status=Status.PENDING.value,
                next_attempt_at=at,
                lease_until=None,
                last_error=error,
                updated_at=datetime.now(UTC),
            )
        )

    async def sent_to_recipient_since(self, recipient_hash: str, since: datetime) -> int:
        """Distinct notices sent to one customer since `since` (e-mail + SMS of one notice = 1)."""
        query = select(func.count(func.distinct(notification.c.dedupe_key))).where(
            notification.c.recipient_hash == recipient_hash,
            notification.c.status == Status.SENT.value,
            notification.c.sent_at >= since,
            notification.c.recipient_kind == "customer",
        )
        return int((await self.session.execute(query)).scalar_one())

    async def notice_sent_to(self, recipient_hash: str, dedupe_key: str) -> bool:
        """Whether another channel of this notice already reached this customer."""
        query = select(func.count()).where(
            notification.c.recipient_hash == recipient_hash,
            notification.c.dedupe_key == dedupe_key,
            notification.c.status == Status.SENT.value,
        )
        return bool((await self.session.execute(query)).scalar_one())

    async def notification(self, notification_id: str) -> Any:
        query = select(notification).where(notification.c.id == notification_id)
        return (await self.session.execute(query)).first()

    async def list_notifications(
        self,
        *,
        order_id: str | None,
        status: str | None,
        recipient_kind: str | None,
        after: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Any]:
        query = select(notification)
        if order_id is not None:
            query = query.where(notification.c.order_id == order_id)
        if status is not None:
            query = query.where(notification.c.status == status)
        if recipient_kind is not None:
            query = query.where(notification.c.recipient_kind == recipient_kind)
        if after is not None:
            created, last_id = after
            query = query.where(
                or_(
                    notification.c.created_at > created,
                    and_(notification.c.created_at == created, notification.c.id > last_id),
                )
            )
        query = query.order_by(notification.c.created_at, notification.c.id).limit(limit)
        return list(await self.session.execute(query))

    async def requeue(self, notification_id: str) -> bool:
        """Send a dead notification again, from a fresh attempt budget."""
        now = datetime.now(UTC)
        result = await self.session.execute(
            update(notification)
            .where(
                notification.c.id == notification_id,
                notification.c.status == Status.DEAD.value,
            )
            .values(
                status=Status.PENDING.value,
                attempts=0,
                next_attempt_at=now,
                last_error=None,
                updated_at=now,
            )
        )
        fresh = bool(getattr(result, "rowcount", 0) == 1)
        self._queued = self._queued or fresh
        return fresh

    async def status_counts(self) -> dict[str, int]:
        query = select(notification.c.status, func.count()).group_by(notification.c.status)
        return {status: int(n) for status, n in (await self.session.execute(query)).tuples()}

    # -- alerts ---------------------------------------------------------------------------
    async def insert_alert(self, values: dict[str, Any]) -> bool:
        stmt = self._insert()(alert).values(**values).on_conflict_do_nothing()
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0) == 1)

    async def alert(self, alert_id: str, *, lock: bool = False) -> Any:
        query = select(alert).where(alert.c.id == alert_id)
        if lock and self.dialect == "postgresql":
            query = query.with_for_update()
        return (await self.session.execute(query)).first()

    async def list_alerts(self, *, open_only: bool, limit: int) -> list[Any]:
        query = select(alert)
        if open_only:
            query = query.where(alert.c.acked_at.is_(None))
        query = query.order_by(alert.c.raised_at.desc()).limit(limit)
        return list(await self.session.execute(query))

    async def ack_alert(self, alert_id: str, by: str, now: datetime) -> bool:
        result = await self.session.execute(
            update(alert)
            .where(alert.c.id == alert_id, alert.c.acked_at.is_(None))
            .values(acked_at=now, acked_by=by)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def overdue_alerts(self, now: datetime, limit: int = 100) -> list[Any]:
        query = (
            select(alert)
            .where(alert.c.acked_at.is_(None), alert.c.due_at <= now)
            .order_by(alert.c.due_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return list(await self.session.execute(query))

    async def escalate_alert(
        self, alert_id: str, severity: str, escalations: int, due_at: datetime
    ) -> None:
        await self.session.execute(
            update(alert)
            .where(alert.c.id == alert_id)
            .values(severity=severity, escalations=escalations, due_at=due_at)
        )

    # -- DLQ watch ------------------------------------------------------------------------
    async def watch_values(self) -> dict[str, int]:
        rows = await self.session.execute(select(watch_state.c.topic, watch_state.c.depth))
        return {topic: int(depth) for topic, depth in rows.all()}

    async def set_watch_value(self, topic: str, depth: int) -> None:
        now = datetime.now(UTC)
        stmt = self._insert()(watch_state).values(topic=topic, depth=depth, updated_at=now)
        stmt = stmt.on_conflict_do_update(
            index_elements=[watch_state.c.topic], set_={"depth": depth, "updated_at": now}
        )
        await self.session.execute(stmt)
