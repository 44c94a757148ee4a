"""Held orders: ops hear about a hold that has stood longer than `DROPSHIP_HOLD_ALERT_AFTER_S`.

`order-held` opens a hold (one per order, reason and time), `order-released` closes every
hold of the order opened before it. The two are separate topics, so a release may arrive
before its hold: the latest release per order is kept, and a hold it covers arrives closed.
A scan beside the escalation loop raises one alert per hold still open past the limit (the
alert's dedupe key is the hold itself).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from services.notify.domain import AlertKind
from services.notify.handlers.alerts import raise_alert
from services.notify.store import NotifyUnitOfWork
from services.notify.tables import order_hold, order_release
from shared.db import aware, dialect_insert
from shared.events import Envelope, OrderHeld, OrderReleased, Severity

log = logging.getLogger(__name__)


async def _latest_release(uow: NotifyUnitOfWork, order_id: str) -> datetime | None:
    """The order's latest release, its row locked: a hold and a release of one order (two
    topics, two consumers) take turns, so neither misses the other."""
    insert = dialect_insert(uow.dialect)(order_release)
    await uow.session.execute(
        insert.values(order_id=order_id, released_at=None).on_conflict_do_nothing()
    )
    query = select(order_release.c.released_at).where(order_release.c.order_id == order_id)
    if uow.dialect == "postgresql":
        query = query.with_for_update()
    return aware(await uow.session.scalar(query))


async def on_order_held(envelope: Envelope, data: OrderHeld, uow: NotifyUnitOfWork) -> None:
    released_at = await _latest_release(uow, data.order_id)
    covered = released_at is not None and released_at >= data.held_at
    stmt = dialect_insert(uow.dialect)(order_hold).values(
        order_id=data.order_id,
        reason=data.reason.value,
        held_at=data.held_at,
        released_at=released_at if covered else None,
    )
    await uow.session.execute(stmt.on_conflict_do_nothing())


async def on_order_released(envelope: Envelope, data: OrderReleased, uow: NotifyUnitOfWork) -> None:
    latest = await _latest_release(uow, data.order_id)
    if latest is None or latest < data.released_at:
        await uow.session.execute(
            update(order_release)
            .where(order_release.c.order_id == data.order_id)
            .values(released_at=data.released_at)
        )
    await uow.session.execute(
        update(order_hold)
        .where(
            order_hold.c.order_id == data.order_id,
            order_hold.c.released_at.is_(None),
            order_hold.c.held_at <= data.released_at,
        )
        .values(released_at=data.released_at)
    )


async def alert_old_holds(uow: NotifyUnitOfWork, after: timedelta) -> int:
    """Raise an alert for each open hold older than `after`; how many were raised."""
    now = datetime.now(UTC)
    async with uow:
        rows = (
            await uow.session.execute(
                select(order_hold).where(
                    order_hold.c.released_at.is_(None),
                    order_hold.c.alerted_at.is_(None),
                    order_hold.c.held_at <= now - after,
                )
            )
        ).all()
        for row in rows:
            held_at = aware(row.held_at) or row.held_at
            await raise_alert(
                uow,
                dedupe_key=f"hold:{row.order_id}:{row.reason}:{held_at.isoformat()}",
                kind=AlertKind.ORDER_HELD,
                severity=Severity.NORMAL,
                order_id=row.order_id,
                title=f"Order {row.order_id} is still on hold ({row.reason})",
                lines=[
                    f"Order: {row.order_id}",
                    f"Hold: {row.reason}",
                    f"Since: {held_at.isoformat()}",
                    "It is not routed until released: fix the address "
                    "(PUT /v1/orders/{id}/shipping-address), release it or cancel it.",
                ],
            )
            await uow.session.execute(
                update(order_hold)
                .where(
                    order_hold.c.order_id == row.order_id,
                    order_hold.c.reason == row.reason,
                    order_hold.c.held_at == row.held_at,
                )
                .values(alerted_at=now)
            )
        await uow.commit()
    return len(rows)


async def hold_alert_loop(
    uows: Callable[[], NotifyUnitOfWork], after_s: float, interval_s: float
) -> None:
    while True:
        try:
            raised = await alert_old_holds(uows(), timedelta(seconds=after_s))
        except Exception:
            log.warning("could not scan holds", exc_info=True)
        else:
            if raised:
                log.info("alerted ops about old holds", extra={"count": raised})
        await asyncio.sleep(interval_s)
