"""Supplier API errors, answered in the supplier API's flat `{"error": "<code>", ...}` shape."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse


class SupplierApiError(Exception):
    """An answer other than success; `body` is the exact JSON a supplier would send."""

    status_code = 400
    code = "bad_request"

    def __init__(self, **fields: Any) -> None:
        super().__init__(self.code)
        self.body: dict[str, Any] = {"error": self.code, **fields}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status_code)


class InvalidCredentials(SupplierApiError):
    status_code = 401
    code = "unauthorized"


class UnknownOrder(SupplierApiError):
    status_code = 404
    code = "not_found"


class UnknownSupplier(SupplierApiError):
    status_code = 404
    code = "not_found"


class OutOfStock(SupplierApiError):
    status_code = 409
    code = "out_of_stock"


class IdempotencyKeyReused(SupplierApiError):
    """The same Idempotency-Key with a different request body."""

    status_code = 409
    code = "idempotency_key_reused"


class NotCancellable(SupplierApiError):
    status_code = 409
    code = "not_cancellable"


class Rejected(SupplierApiError):
    """Not taken and never will be (e.g. a malformed request)."""

    status_code = 422
    code = "rejected"


class BadAddress(SupplierApiError):
    """The ship-to address is incomplete: not taken until someone fixes it."""

    status_code = 422
    code = "bad_address"


class SimulatedFailure(SupplierApiError):
    """The injected transient failure of `fail_http_rate`; nothing was recorded."""

    status_code = 500
    code = "simulated_failure"


class ReturnRefused(SupplierApiError):
    """The supplier will not take the goods back (an RMA refused)."""

    status_code = 422
    code = "refused"
