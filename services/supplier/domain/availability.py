"""When a supplier counts as available: its circuit breaker's moves as status changes. No I/O."""

from __future__ import annotations

from datetime import datetime

from shared.events import SupplierAvailability, SupplierStatusChanged

BREAKER_OPEN = "breaker_open"
BREAKER_CLOSED = "breaker_closed"


def status_change(
    supplier_id: str, old: str, new: str, at: datetime
) -> SupplierStatusChanged | None:
    """The event a breaker move means, if any.

    `closed -> open`: unavailable. `-> closed` (a half-open probe succeeded): available
    again. Probing (`open -> half_open`) and a failed probe (`half_open -> open`) change
    nothing: the supplier was unavailable and still is.
    """
    if new == "open" and old == "closed":
        status, reason = SupplierAvailability.UNAVAILABLE, BREAKER_OPEN
    elif new == "closed" and old != "closed":
        status, reason = SupplierAvailability.AVAILABLE, BREAKER_CLOSED
    else:
        return None
    return SupplierStatusChanged(
        supplier_id=supplier_id, status=status, reason=reason, changed_at=at
    )
