"""After-sales domain: returns, refunds and complaints of an order, and their rules. No I/O.

Returns. A return covers lines that SHIPPED (a `shipment-dispatched` carried them), at most
the line's quantity less what earlier returns that were not rejected already cover, all
from one supplier (the one that shipped them: one RMA, one address). Its status moves

    requested ──authorize──> authorized ──receive──> received ──refund──> refunded
        └──────reject───────────┴──> rejected          (authorized ──refund──> refunded too)

and any other move is a `ReturnStatusConflict` naming the current status.

Refunds. Never more than what the customer paid (`paid`: each line's price times its
quantity; the order records no discounts or shipping) across every refund of the order; a
line's refunded quantity never exceeds its quantity. The cost falls on the supplier who
shipped the goods when the reason is a supplier fault (`SUPPLIER_FAULTS`) and something
shipped, on the merchant otherwise (a refund of a cancelled, never-shipped order included).

Complaints. Filed with a tier; respond by the tier's target, resolve within the resolution
target. The first response is an event, later ones are only recorded; resolving an
unanswered complaint is its first response too. Summary, messages and resolutions never
leave the order service in an event.
"""

from services.order.aftersales.domain.complaints import (
    Complaint,
    ComplaintResponse,
    ComplaintTargets,
)
from services.order.aftersales.domain.refunds import (
    Refund,
    RefundAsk,
    issue_refund,
    refunded_total,
    remaining,
)
from services.order.aftersales.domain.returns import (
    SOURCES,
    ItemQty,
    Return,
    ReturnedLine,
    ReturnStatus,
    paid,
    returnable,
    shipped_lines,
)

__all__ = [
    "SOURCES",
    "Complaint",
    "ComplaintResponse",
    "ComplaintTargets",
    "ItemQty",
    "Refund",
    "RefundAsk",
    "Return",
    "ReturnStatus",
    "ReturnedLine",
    "issue_refund",
    "paid",
    "refunded_total",
    "remaining",
    "returnable",
    "shipped_lines",
]
