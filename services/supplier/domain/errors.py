"""The supplier service's domain errors: one root, one subclass per case.

    SupplierError
     +-- IllegalTransition      a supplier order cannot make this move from its state (409)
     +-- SupplierNotFound       no supplier with this id (404)
     +-- OfferNotFound          the supplier has no offer for this SKU (404)
     +-- SupplierKeyTaken       another supplier has this supplier_key (409)
     +-- InvalidOffers          offers that break a catalogue rule; `details` names each (422)
     +-- InvalidCsv             an offer file with bad rows; `details` names line and column (422)
     +-- OrderNotFound          no order (or no such line of it) known to routing (404)
     +-- LineBusy               the line has a live supplier order: not routed again (409)
     +-- NoOfferForLine         the chosen supplier has no offer for the line's SKU (422)
     +-- NotRoutable            routing the line again found no supplier; `details.reason` (409)

HTTP statuses are mapped once, in `services.supplier.errors`.
"""

from __future__ import annotations

from typing import Any


class SupplierError(Exception):
    """Root of the supplier service's domain errors."""

    details: Any = None


class IllegalTransition(SupplierError):
    """A supplier order was asked to make a move its lifecycle does not allow."""

    def __init__(self, so_id: str, state: str, action: str) -> None:
        super().__init__(f"supplier order {so_id} is {state}: cannot {action}")
        self.so_id, self.state, self.action = so_id, state, action


class SupplierNotFound(SupplierError):
    def __init__(self, supplier_id: str) -> None:
        super().__init__(f"supplier {supplier_id} not found")
        self.supplier_id = supplier_id


class OfferNotFound(SupplierError):
    def __init__(self, supplier_id: str, sku: str) -> None:
        super().__init__(f"supplier {supplier_id} has no offer for {sku}")


class SupplierKeyTaken(SupplierError):
    def __init__(self, supplier_key: str, supplier_id: str) -> None:
        super().__init__(f"supplier_key {supplier_key} is taken")
        self.details = {"supplier_id": supplier_id}


class InvalidOffers(SupplierError):
    """`details`: `[{"field": "body.<i>.<field>", "reason": ...}]`, first one in the message."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        first = problems[0]
        super().__init__(f"{first['field']}: {first['reason']}")
        self.details = problems


class InvalidCsv(SupplierError):
    """`details`: `[{"line", "column", "reason"}]`; nothing of the file was imported."""

    def __init__(self, message: str, problems: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.details = problems


class OrderNotFound(SupplierError):
    def __init__(self, order_id: str, line_id: str | None = None) -> None:
        what = f"order {order_id}" if line_id is None else f"line {line_id} of order {order_id}"
        super().__init__(f"{what} not found")


class LineBusy(SupplierError):
    def __init__(self, line_id: str, state: str) -> None:
        super().__init__(f"line {line_id} has a live supplier order ({state})")
        self.details = {"line_id": line_id, "state": state}


class NoOfferForLine(SupplierError):
    def __init__(self, supplier_id: str, sku: str) -> None:
        super().__init__(f"supplier_id: supplier {supplier_id} has no offer for {sku}")
        self.details = [{"field": "body.supplier_id", "reason": f"no offer for {sku}"}]


class NotRoutable(SupplierError):
    """`reason` is a routing failure reason (no_offer, out_of_stock, negative_margin, ...)."""

    def __init__(self, line_id: str, reason: str, hint: str = "") -> None:
        super().__init__(f"line {line_id} cannot be routed: {reason}{hint}")
        self.reason = reason
        self.details = {"line_id": line_id, "reason": reason}
