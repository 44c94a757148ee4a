"""The handling clock (placed -> every line accepted) and the lost-parcel clock."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from services.supplier.store import SupplierUnitOfWork
from services.supplier.store.waiting import HANDLING, LOST
from shared.events import DelayReason, Severity, ShipmentDelayed

log = logging.getLogger(__name__)
NOBODY = "unassigned"
"""`supplier_id` of a handling delay when no supplier holds the late lines (they wait)."""


async def scan_clocks(
    uow: SupplierUnitOfWork,
    *,
    handling: timedelta,
    silence: timedelta,
    now: datetime | None = None,
) -> int:
    """`shipment-delayed` `not_accepted_in_time` for an order some line of which no
    supplier accepted within `handling` of its placing, and `lost_in_transit` for a parcel
    silent for `silence` after dispatch; each once. Returns how many fired."""
    now = now or datetime.now(UTC)
    fired = 0
    async with uow:
        for order in await uow.clock_scans.past_handling(now - handling):
            await uow.clocks.fire_once(order.order_id, HANDLING, now)
            if not order.late:
                continue  # every line accepted in time: checked, nothing to say
            holders = [s for s in order.late.values() if s is not None]
            uow.emit(
                ShipmentDelayed(
                    order_id=order.order_id,
                    supplier_id=holders[0] if holders else NOBODY,
                    reason=DelayReason.NOT_ACCEPTED_IN_TIME,
                    severity=Severity.URGENT,
                    expected_by=None,
                )
            )
            for supplier_id in set(holders):
                await uow.suppliers.mark(supplier_id, "missed_deadline", now)
            fired += 1
        for parcel in await uow.clock_scans.silent(now - silence):
            if not await uow.clocks.fire_once(parcel.so_id, LOST, now):
                continue
            uow.emit(
                ShipmentDelayed(
                    order_id=parcel.order_id,
                    supplier_id=parcel.supplier_id,
                    reason=DelayReason.LOST_IN_TRANSIT,
                    severity=Severity.URGENT,
                    expected_by=None,
                )
            )
            await uow.suppliers.mark(parcel.supplier_id, "lost_in_transit", now)
            fired += 1
        await uow.commit()
    if fired:
        log.info("clock delays emitted", extra={"count": fired})
    return fired
