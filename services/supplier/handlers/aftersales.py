"""After-sales facts against suppliers: quality-defect returns and chargebacks, each once.

The consumer framework drops a redelivered envelope; the records are keyed as well (a
return per (return id, supplier), a chargeback per refund id), so the same fact in a new
envelope, or replayed from a DLQ, counts once too.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from services.supplier.domain.quality import chargeback_of, returns_of
from services.supplier.store import SupplierUnitOfWork
from shared.events import CostBearer, Envelope, RefundIssued, ReturnAuthorized

log = logging.getLogger(__name__)


async def on_return_authorized(
    envelope: Envelope, data: ReturnAuthorized, uow: SupplierUnitOfWork
) -> None:
    """Count the return against the supplier of its lines; defects weigh on its ranking."""
    for part in returns_of(data):
        if await uow.quality.record_return(part) and part.defect:
            uow.forget_after_commit(part.supplier_id)  # rank with the new defect rate
            log.info(
                "quality-defect return counted against supplier",
                extra={
                    "order_id": data.order_id,
                    "supplier_id": part.supplier_id,
                    "event_id": envelope.id,
                },
            )


async def on_refund_issued(envelope: Envelope, data: RefundIssued, uow: SupplierUnitOfWork) -> None:
    """A refund the supplier bears is recorded as its chargeback (once per refund id)."""
    charge = chargeback_of(data)
    if charge is None:
        if data.cost_bearer is CostBearer.SUPPLIER:
            log.warning(
                "supplier-borne refund names no single supplier: no chargeback recorded",
                extra={"order_id": data.order_id, "event_id": envelope.id},
            )
        return
    await uow.quality.record_chargeback(charge, datetime.now(UTC))
