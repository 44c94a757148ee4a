"""The order service's domain errors, one tree; `api.DOMAIN_ERRORS` maps each to HTTP once.

    OrderError
    ├── OrderNotFound              no order with this id             (404 not_found)
    ├── CannotCancel               the order has shipped             (409 already_shipped)
    ├── IdempotencyConflict        key reused with another body      (409 idempotency_key_reused)
    ├── DuplicateExternalOrder     channel + external_id exists      (409 duplicate_external_id)
    ├── OrderClosed                the order is cancelled            (409 order_closed)
    ├── SupplierHasOrder           a supplier confirmed a line       (409 supplier_has_order)
    ├── NotOnHold                  release of an order not on hold   (409 not_on_hold)
    ├── AddressFixRequired         only address_invalid holds it     (409 address_fix_required)
    ├── InvalidAddress             fails the country's address rules (422 validation_error)
    ├── InvalidCursor              not a cursor this API returned    (422 validation_error)
    └── InvalidMarketplaceOrder    a webhook payload cannot be an order (422 validation_error)
        └── marketplaces.MarketplacePayloadError   a field of the raw payload is unusable

An error's message is what the client reads; `details`, when set, is the error shape's
`details` (a mapping or a list of `{"field", "reason"}`). Nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class OrderError(Exception):
    """Root of the order service's domain errors."""

    details: Any = None


class OrderNotFound(OrderError):
    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} not found")
        self.order_id = order_id
        self.details = {"order_id": order_id}


class CannotCancel(OrderError):
    """The order has shipped (or been delivered): it can no longer be cancelled."""


class IdempotencyConflict(OrderError):
    """The Idempotency-Key was already used with a different request body."""

    def __init__(self) -> None:
        super().__init__("Idempotency-Key was used with a different request body")


class DuplicateExternalOrder(OrderError):
    """A storefront order repeats the channel and external id of an existing order."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"an order with this channel and external_id exists: {order_id}")
        self.order_id = order_id
        self.details = {"order_id": order_id}


class OrderClosed(OrderError):
    """The order is cancelled: it can no longer be held or re-addressed."""


class SupplierHasOrder(OrderError):
    """A supplier has confirmed (or shipped) a line: too late to hold or re-address."""


class NotOnHold(OrderError):
    """A release for an order with no hold standing."""


class AddressFixRequired(OrderError):
    """Only `address_invalid` holds the order: a valid shipping address lifts it, not release."""


class InvalidAddress(OrderError):
    """A shipping address (or phone) that breaks the destination country's rules."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__(
            "shipping address breaks the country's rules: "
            + "; ".join(f"{field}: {rule}" for field, rule in problems)
        )
        self.details = [{"field": field, "reason": rule} for field, rule in problems]


class RecipientRequired(InvalidAddress):
    """A shipping address sent for an order that has no recipient name, without one."""

    def __init__(self, message: str) -> None:
        super().__init__([("name", "required: the order has no recipient name")])
        self.args = (message,)


class InvalidCursor(OrderError):
    """A list cursor that this API did not hand out (or that was tampered with)."""

    def __init__(self) -> None:
        message = "cursor is not one this API returned"
        super().__init__(message)
        self.details = [{"field": "query.cursor", "reason": message}]


class InvalidMarketplaceOrder(OrderError):
    """A marketplace order that breaks a storefront order rule; `details` names each field."""

    def __init__(self, message: str, details: list[dict[str, str]]) -> None:
        super().__init__(message)
        self.details = details
