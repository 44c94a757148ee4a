"""Return authorisations: the order service asks a supplier for an RMA through us.

`POST /v1/suppliers/{supplier_id}/rma` (service token, like the order service's contact
read) takes `{"return_id", "order_id", "reason", "lines": [{"line_id", "sku",
"quantity"}]}`. The desk reads the supplier (credentials unsealed) and the order's
allocations (our lines to the supplier's SKUs and its order reference) in one short
read-only unit of work, then calls the supplier's `POST /returns` outside any transaction
through a `SupplierClient` (timeouts, tenacity retries with the same `Idempotency-Key` =
the return id, a breaker of its own: a slow returns desk must not stop routing). Answers:

    200 {"status": "granted", "rma", "return_address"}
    200 {"status": "refused", "reason"}              the supplier will not take them back
    503 + Retry-After                                no usable answer in time (nothing kept)
    404                                              no such supplier

Nothing is stored here: the return and its RMA live in the order service, and asking
again with the same return id gets the supplier's first answer (its idempotency).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.supplier.adapter import (
    OrderLine,
    Outcome,
    Rejected,
    ReturnRequest,
    RmaGranted,
    SupplierClient,
    SupplierEndpoint,
    Unavailable,
)
from services.supplier.domain import SupplierNotFound
from services.supplier.settings import SupplierSettings
from services.supplier.store import SupplierUnitOfWork
from shared.egress import guarded_client
from shared.http import check_bearer, error_body
from shared.runtime import ServiceRuntime

RETRY_AFTER_S = 5


class RmaLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    line_id: str = Field(min_length=1, max_length=80)
    sku: str = Field(min_length=1, max_length=128)
    quantity: int = Field(ge=1, le=100_000)


class RmaIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    return_id: str = Field(min_length=1, max_length=64)
    order_id: str = Field(min_length=1, max_length=64)
    reason: str = Field(min_length=1, max_length=64)
    lines: list[RmaLineIn] = Field(min_length=1, max_length=500)


class RmaDesk:
    """Asks suppliers for RMAs; one per app, a short-lived HTTP client per request."""

    def __init__(self, runtime: ServiceRuntime[SupplierUnitOfWork], client: SupplierClient):
        self.runtime = runtime
        self.client = client

    async def ask(self, supplier_id: str, body: RmaIn) -> Outcome:
        async with self.runtime.uow() as uow:
            entry = await uow.suppliers.entry(supplier_id)
            if entry is None:
                raise SupplierNotFound(supplier_id)
            allocations = await uow.supplier_orders.allocations(body.order_id)
        mine = {a.line_id: a for a in allocations if a.supplier_id == supplier_id}
        ours = [mine[ln.line_id] for ln in body.lines if ln.line_id in mine]
        refs = sorted(a.supplier_order_ref for a in ours if a.supplier_order_ref)
        request = ReturnRequest(
            return_id=body.return_id,
            order_id=body.order_id,
            supplier_order_ref=refs[0] if refs else None,
            reason=body.reason,
            lines=[
                OrderLine(
                    mine[ln.line_id].supplier_sku if ln.line_id in mine else ln.sku, ln.quantity
                )
                for ln in body.lines
            ],
        )
        endpoint = SupplierEndpoint(
            entry.id, entry.api_base_url, entry.credentials.api_key, entry.rate_limit_per_s
        )
        return await self.client.request_return(endpoint, request)


router = APIRouter(prefix="/v1", tags=["service-to-service"])


async def service_token(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer service token")] = None,
) -> None:
    settings: SupplierSettings = request.app.state.settings
    check_bearer(authorization, settings.service_token.get_secret_value())


@router.post(
    "/suppliers/{supplier_id}/rma",
    summary="Ask the supplier for a return authorisation (service token; idempotent on return_id)",
    responses={503: {"description": "the supplier did not answer usefully in time"}},
)
async def ask_rma(
    supplier_id: str,
    body: RmaIn,
    request: Request,
    _: Annotated[None, Depends(service_token)],
) -> JSONResponse:
    settings: SupplierSettings = request.app.state.settings
    runtime: ServiceRuntime[SupplierUnitOfWork] = request.app.state.runtime
    # the supplier's own URL: through the egress guard, like every supplier call
    async with guarded_client(settings.egress_policy()) as http:
        client = SupplierClient(
            http,
            request.app.state.rma_breaker,
            timeout_s=settings.rma_timeout_s,
            max_attempts=settings.rma_max_attempts,
            backoff_initial_s=settings.supplier_backoff_s,
        )
        outcome = await RmaDesk(runtime, client).ask(supplier_id, body)
    return _answer(outcome)


def _answer(outcome: Outcome) -> JSONResponse:
    body: dict[str, Any]
    if isinstance(outcome, RmaGranted):
        body = {"status": "granted", "rma": outcome.rma, "return_address": outcome.return_address}
        return JSONResponse(body)
    if isinstance(outcome, Rejected):
        return JSONResponse({"status": "refused", "reason": outcome.reason})
    reason = outcome.reason if isinstance(outcome, Unavailable) else "no usable answer"
    return JSONResponse(
        error_body(
            "supplier_unavailable",
            f"the supplier did not answer the return request: {reason}",
            {"reason": reason},
        ),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
