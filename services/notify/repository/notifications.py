"""The notification log: queued sends, their leases and outcomes, and pages of the log."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Row, String, Text, and_, bindparam, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.domain import InvalidCursor, Notification, NotificationFilter, Status
from services.notify.tables import notification
from shared.db import aware, insert_skipping_conflicts

_FIELDS = fields(Notification)


def encode_cursor(created_at: datetime, notification_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), notification_id])
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, last_id = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(created), str(last_id)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidCursor() from exc


def _notification(row: Row[Any]) -> Notification:
    return Notification(
        id=row.id,
        dedupe_key=row.dedupe_key,
        channel=row.channel,
        target=row.target,
        recipient_kind=row.recipient_kind,
        order_id=row.order_id,
        kind=row.kind,
        reason=row.reason,
        alert_id=row.alert_id,
        severity=row.severity,
        template=row.template,
        locale=row.locale,
        status=Status(row.status),
        attempts=row.attempts,
        next_attempt_at=aware(row.next_attempt_at) or row.next_attempt_at,
        last_error=row.last_error,
        details=dict(row.details),
        created_at=aware(row.created_at) or row.created_at,
        sent_at=aware(row.sent_at),
    )


def _reserve_under_cap() -> Any:
    """`Notifications.reserve_under_cap`'s statement, built once (its parameters `p_*`)."""
    other = notification.alias("other")
    mine = other.c.recipient_hash == bindparam("p_recipient"), other.c.recipient_kind == "customer"
    already_sent = (
        select(other.c.id)
        .where(
            *mine,
            other.c.dedupe_key == bindparam("p_dedupe_key"),
            other.c.status == Status.SENT.value,
        )
        .exists()
    )
    counted = (
        select(func.count(func.distinct(other.c.dedupe_key)))
        .where(
            *mine,
            other.c.dedupe_key != bindparam("p_dedupe_key"),  # its other channel is one notice
            or_(
                and_(other.c.status == Status.SENT.value, other.c.sent_at >= bindparam("p_since")),
                and_(
                    other.c.status == Status.SENDING.value,
                    other.c.lease_until > bindparam("p_now"),
                ),
            ),
        )
        .scalar_subquery()
    )
    return (
        update(notification)
        .where(
            notification.c.id == bindparam("p_id"),
            notification.c.status == Status.SENDING.value,
            notification.c.attempts == bindparam("p_attempts"),
            or_(already_sent, counted < bindparam("p_cap")),
        )
        .values(recipient_hash=bindparam("p_recipient"))
        .returning(notification.c.id)
    )


_RESERVE_UNDER_CAP = _reserve_under_cap()
_CUSTOMER_LOCK = text("SELECT pg_advisory_xact_lock(hashtext(:r))")

# The statements of every notice, built once: each execution hands over its values as
# parameters, so none is constructed (nor its cache key walked) again per send.
_QUEUE = insert_skipping_conflicts(notification)


def _kept_unless(name: str, column: Any) -> Any:
    """The parameter `name` where it is given, the column's own value where it is None."""
    return func.coalesce(bindparam(name, type_=column.type), column)


_FINISH = (
    update(notification)
    .where(
        notification.c.id == bindparam("p_id"),
        notification.c.status == Status.SENDING.value,
        notification.c.attempts == bindparam("p_attempts"),
    )
    .values(
        status=bindparam("p_status", type_=String()),
        lease_until=None,
        last_error=bindparam("p_error", type_=Text()),
        updated_at=bindparam("p_now", type_=notification.c.updated_at.type),
        sent_at=_kept_unless("p_sent_at", notification.c.sent_at),
        locale=_kept_unless("p_locale", notification.c.locale),
        recipient_hash=_kept_unless("p_recipient", notification.c.recipient_hash),
    )
)


class Notifications:
    """The notification log: one row per send per channel, unique per (dedupe key, channel,
    target), claimed by senders under a lease fenced by the attempt number."""

    def __init__(
        self,
        session: AsyncSession,
        dialect: str,
        on_queued: Callable[[], None],
        claim_room: Callable[[], int] = lambda: 0,
        lease: timedelta = timedelta(0),
    ) -> None:
        self.session = session
        self.dialect = dialect
        self._on_queued = on_queued
        self._claim_room = claim_room
        self._lease = lease
        self.claimed: dict[str, Notification] = {}
        """Sends this transaction queued already claimed (for the in-memory hand-off)."""

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
        """Queue one send; False if this (dedupe key, channel, target) was queued before.

        A send due now is claimed on the spot while the sender has room (`claim_room`):
        written `sending` under a lease with its first attempt counted, exactly as
        `claim_due` would leave it, and kept in `claimed` for the hand-off after commit.
        """
        now = datetime.now(UTC)
        claim = not_before <= now and self._claim_room() > len(self.claimed)
        sent = Notification(
            id=str(uuid.uuid4()),
            dedupe_key=dedupe_key,
            channel=channel,
            target=target,
            recipient_kind=recipient_kind,  # type: ignore[arg-type]
            order_id=order_id,
            kind=kind,
            reason=reason,
            alert_id=alert_id,
            severity=severity,
            template=template,
            locale=None,
            status=Status.SENDING if claim else Status.PENDING,
            attempts=1 if claim else 0,
            next_attempt_at=not_before,
            last_error=None,
            details=details,
            created_at=now,
            sent_at=None,
        )
        row = {field.name: getattr(sent, field.name) for field in _FIELDS}
        row["status"] = sent.status.value
        row["lease_until"] = now + self._lease if claim else None
        row["updated_at"] = now
        result = await self.session.execute(_QUEUE[self.dialect], row)
        fresh = bool(getattr(result, "rowcount", 0) == 1)
        if fresh and claim:
            self.claimed[sent.id] = sent
        elif fresh:
            self._on_queued()
        return fresh

    async def waiting_with_key(self, dedupe_key: str) -> list[Notification]:
        """Sends of a notice still waiting to go out (their details can still grow): pending,
        or claimed by this very transaction and not handed to the sender yet."""
        waiting = and_(
            notification.c.status == Status.PENDING.value,
            notification.c.attempts == 0,
        )
        if self.claimed:
            waiting = or_(waiting, notification.c.id.in_(list(self.claimed)))
        query = select(notification).where(notification.c.dedupe_key == dedupe_key, waiting)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        return [_notification(row) for row in await self.session.execute(query)]

    async def set_details(self, notification_id: str, details: dict[str, Any]) -> None:
        if notification_id in self.claimed:  # the sender is handed what the row holds
            self.claimed[notification_id] = replace(self.claimed[notification_id], details=details)
        await self.session.execute(
            update(notification)
            .where(notification.c.id == notification_id)
            .values(details=details, updated_at=datetime.now(UTC))
        )

    async def claim_due(self, now: datetime, lease: timedelta, limit: int) -> list[Notification]:
        """Take due sends (pending and due, or sending with an expired lease) under a lease.

        Each comes back as claimed: `sending`, its `attempts` counting this attempt, the
        number a later `finish` or `reschedule` must present.
        """
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
        due = [_notification(row) for row in await self.session.execute(query)]
        if due:
            await self.session.execute(
                update(notification)
                .where(notification.c.id.in_([n.id for n in due]))
                .values(
                    status=Status.SENDING.value,
                    lease_until=now + lease,
                    attempts=notification.c.attempts + 1,
                    updated_at=now,
                )
            )
        return [replace(n, status=Status.SENDING, attempts=n.attempts + 1) for n in due]

    async def finish(
        self,
        claimed: Notification,
        status: Status,
        *,
        error: str | None = None,
        locale: str | None = None,
        recipient_hash: str | None = None,
    ) -> bool:
        """Record a terminal outcome; False if the row was no longer being sent by us.

        The claim's attempt number fences the write: if our lease expired and another
        sender claimed the row (bumping `attempts`), our late outcome is dropped instead
        of overwriting its.
        """
        now = datetime.now(UTC)
        result = await self.session.execute(
            _FINISH,
            {
                "p_id": claimed.id,
                "p_attempts": claimed.attempts,
                "p_status": status.value,
                "p_error": error,
                "p_now": now,
                "p_sent_at": now if status is Status.SENT else None,  # None keeps the column's
                "p_locale": locale,
                "p_recipient": recipient_hash,
            },
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def reschedule(self, claimed: Notification, at: datetime, error: str) -> None:
        """Back to pending until `at` (fenced like `finish`)."""
        await self.session.execute(
            update(notification)
            .where(
                notification.c.id == claimed.id,
                notification.c.status == Status.SENDING.value,
                notification.c.attempts == claimed.attempts,
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

    async def reserve_under_cap(
        self, claimed: Notification, recipient_hash: str, since: datetime, cap: int
    ) -> bool:
        """Count this send against the customer's cap, atomically: False if `cap` other
        notices were sent since `since` or are being sent now (reserved, lease live), or if
        the send's lease was lost meanwhile. A notice whose other channel already reached the
        customer is the same notice: it goes whatever the count.

        Two sends to one customer racing (two sender slots, two replicas) would both see
        room under the cap; the check and the reservation (the recipient written on the
        row being sent) are one statement under one per-customer lock (SQLite: the write
        lock every transaction takes; PostgreSQL: an advisory transaction lock on the
        customer, taken first so the statement's snapshot sees every earlier reservation).
        """
        if self.dialect == "postgresql":
            await self.session.execute(_CUSTOMER_LOCK, {"r": recipient_hash})
        reserved = await self.session.execute(
            _RESERVE_UNDER_CAP,
            {
                "p_id": claimed.id,
                "p_attempts": claimed.attempts,
                "p_recipient": recipient_hash,
                "p_dedupe_key": claimed.dedupe_key,
                "p_since": since,
                "p_now": datetime.now(UTC),
                "p_cap": cap,
            },
        )
        return reserved.first() is not None

    async def get(self, notification_id: str) -> Notification | None:
        query = select(notification).where(notification.c.id == notification_id)
        row = (await self.session.execute(query)).first()
        return None if row is None else _notification(row)

    async def page(
        self, flt: NotificationFilter, limit: int, cursor: str | None
    ) -> tuple[list[Notification], str | None]:
        """One page, oldest first, and the cursor of the next page (None on the last)."""
        query = select(notification)
        if flt.order_id is not None:
            query = query.where(notification.c.order_id == flt.order_id)
        if flt.status is not None:
            query = query.where(notification.c.status == flt.status.value)
        if flt.recipient_kind is not None:
            query = query.where(notification.c.recipient_kind == flt.recipient_kind)
        if cursor is not None:
            created, last_id = decode_cursor(cursor)
            query = query.where(
                or_(
                    notification.c.created_at > created,
                    and_(notification.c.created_at == created, notification.c.id > last_id),
                )
            )
        query = query.order_by(notification.c.created_at, notification.c.id).limit(limit + 1)
        rows = [_notification(row) for row in await self.session.execute(query)]
        page = rows[:limit]
        more = len(rows) > limit
        return page, encode_cursor(page[-1].created_at, page[-1].id) if more else None

    async def requeue(self, notification_id: str) -> bool:
        """Send a dead notification again, from a fresh attempt budget; False unless dead."""
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
        if fresh:
            self._on_queued()
        return fresh
