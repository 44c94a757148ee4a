"""After-sales domain errors, one tree; `aftersales.api.AFTERSALES_ERRORS` maps each once.

    AfterSalesError
    ├── ReturnNotFound        no return with this id (for this order)  404 not_found
    ├── ComplaintNotFound     no complaint with this id                404 not_found
    ├── NothingShipped        a return on an order with nothing shipped  409 not_shipped
    ├── ReturnStatusConflict  a move the return's status does not allow  409 invalid_transition
    ├── RefundExceedsPaid     more than remains of what was paid       409 refund_exceeds_paid
    ├── ComplaintClosed       the complaint is resolved already        409 complaint_resolved
    ├── InvalidAfterSales     a field breaks a rule; `details` names it  422 validation_error
    └── RmaUnavailable        the supplier did not answer in time      503 supplier_unavailable

Messages are what the client reads; they name ids, statuses and amounts, never customer text.
"""

from __future__ import annotations

from typing import Any


class AfterSalesError(Exception):
    """Root of the after-sales errors."""

    details: Any = None


class ReturnNotFound(AfterSalesError):
    def __init__(self, return_id: str) -> None:
        super().__init__(f"return {return_id} not found")
        self.details = {"return_id": return_id}


class ComplaintNotFound(AfterSalesError):
    def __init__(self, complaint_id: str) -> None:
        super().__init__(f"complaint {complaint_id} not found")
        self.details = {"complaint_id": complaint_id}


class NothingShipped(AfterSalesError):
    """Nothing of the order has shipped: there is nothing to send back."""

    def __init__(self, order_id: str, status: str) -> None:
        super().__init__(f"order {order_id} has not shipped anything (status {status}): no return")
        self.details = {"order_id": order_id, "status": status}


class ReturnStatusConflict(AfterSalesError):
    """The return's status does not allow this move; nothing changed."""

    def __init__(self, return_id: str, status: str, action: str) -> None:
        super().__init__(f"return {return_id} is {status}: cannot {action} it")
        self.details = {"return_id": return_id, "status": status, "action": action}


class RefundExceedsPaid(AfterSalesError):
    """A refund beyond what remains of what the customer paid (after earlier refunds)."""

    def __init__(self, amount: str, remaining: str, paid: str, currency: str) -> None:
        super().__init__(
            f"refund of {amount} {currency} exceeds the {remaining} {currency} that remains "
            f"refundable of the {paid} {currency} paid"
        )
        self.details = {"remaining": remaining, "paid": paid, "currency": currency}


class ComplaintClosed(AfterSalesError):
    def __init__(self, complaint_id: str) -> None:
        super().__init__(f"complaint {complaint_id} is resolved already")
        self.details = {"complaint_id": complaint_id, "status": "resolved"}


class InvalidAfterSales(AfterSalesError):
    """`details`: `[{"field", "reason"}]`; the message is the first of them."""

    def __init__(self, problems: list[tuple[str, str]], message: str | None = None) -> None:
        field, reason = problems[0]
        super().__init__(message or f"{field}: {reason}")
        self.details = [{"field": f, "reason": r} for f, r in problems]


class RmaUnavailable(AfterSalesError):
    """The supplier (or the supplier service) did not answer the RMA request usefully in
    time; the return stays `requested` and asking again later is safe (same RMA)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"the supplier did not answer the RMA request: {reason}; try again later")
        self.details = {"reason": reason}
