"""API commands: acknowledge an alert, send a dead notification again. One unit of work each."""

from __future__ import annotations

from datetime import UTC, datetime

from services.notify.domain import Alert, AlertNotFound, NotDead, Notification, NotificationNotFound
from services.notify.store import NotifyUnitOfWork


async def acknowledge(uow: NotifyUnitOfWork, alert_id: str, by: str) -> Alert:
    """Stop an alert escalating; idempotent, the first acknowledgement stands."""
    async with uow:
        await uow.alerts.acknowledge(alert_id, by, datetime.now(UTC))
        alert = await uow.alerts.get(alert_id)
        if alert is None:
            raise AlertNotFound(alert_id)
        await uow.commit()
    return alert


async def retry(uow: NotifyUnitOfWork, notification_id: str) -> Notification:
    """Queue a dead notification again with a fresh attempt budget (`NotDead` otherwise)."""
    async with uow:
        requeued = await uow.notifications.requeue(notification_id)
        found = await uow.notifications.get(notification_id)
        if found is None:
            raise NotificationNotFound(notification_id)
        if not requeued:
            raise NotDead(found.status)
        await uow.commit()  # wakes the sender
    return found
