"""Lines waiting for a temporarily unavailable supplier are routed again when due."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from services.supplier.domain import LIVE
from services.supplier.routing import PERMANENT, route
from services.supplier.store import SupplierUnitOfWork
from shared.events import WaitingReason

log = logging.getLogger(__name__)


async def retry_waiting(uow: SupplierUnitOfWork, now: datetime | None = None) -> int:
    """Route due waiting lines again (suppliers that failed them for good excluded); lines
    that still find no reachable supplier wait again, backing off. Returns lines tried."""
    now = now or datetime.now(UTC)
    tried = 0
    async with uow:
        for order_id, line_ids in (await uow.waiting.due(now)).items():
            request = await uow.routing_requests.get(order_id, for_update=True)
            if request is None or request.cancelled_at is not None:
                await uow.waiting.clear(order_id)
                continue
            if await uow.holds.held(order_id):  # routed again when released
                await uow.holds.park(order_id, line_ids)
                continue
            live = await live_lines(uow, order_id)
            lines = [ln for ln in request.lines_named(set(line_ids)) if ln.line_id not in live]
            if not lines:
                continue
            known = await uow.waiting.of_order(order_id)
            reason = WaitingReason(known[lines[0].line_id].reason)
            permanent = await uow.supplier_orders.passed_over(order_id, PERMANENT, for_good=True)
            await route(uow, request, lines, permanent, permanent=permanent, waiting=reason)
            tried += len(lines)
        await uow.commit()
    if tried:
        log.info("waiting lines routed again", extra={"count": tried})
    return tried


async def next_retry_at(uow: SupplierUnitOfWork) -> datetime | None:
    """When the clock of waiting lines next has work (None: no line waits)."""
    async with uow:
        return await uow.waiting.next_due()


async def live_lines(uow: SupplierUnitOfWork, order_id: str) -> set[str]:
    """Lines of the order a supplier order is working on (sending, placed, accepted, shipped)."""
    return {
        a.line_id
        for so in await uow.supplier_orders.of_order(order_id)
        if so.state in LIVE
        for a in so.lines
    }
