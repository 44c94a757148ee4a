"""API reads: the delivery log, alerts and template previews, as domain records."""

from __future__ import annotations

from services.notify.domain import (
    Alert,
    AlertNotFound,
    Kind,
    Notification,
    NotificationFilter,
    NotificationNotFound,
)
from services.notify.rendering import Rendered, Renderer, sample_context
from services.notify.store import NotifyUnitOfWork


async def notifications(
    uow: NotifyUnitOfWork, flt: NotificationFilter, limit: int, cursor: str | None
) -> tuple[list[Notification], str | None]:
    """One page of the log, oldest first, and the next page's cursor (`InvalidCursor`)."""
    async with uow:
        return await uow.notifications.page(flt, limit, cursor)


async def notification(uow: NotifyUnitOfWork, notification_id: str) -> Notification:
    async with uow:
        found = await uow.notifications.get(notification_id)
    if found is None:
        raise NotificationNotFound(notification_id)
    return found


async def alerts(uow: NotifyUnitOfWork, *, open_only: bool, limit: int) -> list[Alert]:
    """Newest first; `open_only` leaves out acknowledged ones."""
    async with uow:
        return await uow.alerts.recent(open_only=open_only, limit=limit)


async def alert(uow: NotifyUnitOfWork, alert_id: str) -> Alert:
    async with uow:
        found = await uow.alerts.get(alert_id)
    if found is None:
        raise AlertNotFound(alert_id)
    return found


def preview(renderer: Renderer, kind: Kind, locale: str) -> Rendered:
    """A notice rendered with sample data, in `locale` (unknown locales fall back to en)."""
    return renderer.render(kind, locale, sample_context(kind, locale))
