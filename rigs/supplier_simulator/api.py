"""HTTP routes: the supplier API under `/{supplier_key}`, the `/_control` surface, `/healthz`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from rigs.supplier_simulator.engine import Simulator
from rigs.supplier_simulator.errors import SupplierApiError
from rigs.supplier_simulator.models import (
    SUPPLIER_KEY_PATTERN,
    CancelResponse,
    ControlPatch,
    ControlView,
    OrderList,
    OrderStatus,
    PlaceOrderRequest,
    PlaceOrderResponse,
    RequestLog,
    ReturnGranted,
    ReturnList,
    ReturnRequest,
    SupplierStats,
)
from rigs.supplier_simulator.state import Supplier
from shared.http import field_errors


class SupplierApiRoute(APIRoute):
    """Answers errors in the supplier API's own flat shape instead of the platform envelope.

    A malformed request is `422 {"error": "rejected", "reason", "details"}`: not taken and
    never will be, which is what the contract tells the caller to fail over on.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except SupplierApiError as exc:
                return exc.response()
            except RequestValidationError as exc:
                details = field_errors(exc)
                reason = "; ".join(f"{d['field']}: {d['reason']}" for d in details)
                return JSONResponse(
                    {
                        "error": "rejected",
                        "reason": reason or "invalid request",
                        "details": details,
                    },
                    status_code=422,
                )

        return handle


async def simulator_of(request: Request) -> Simulator:
    simulator: Simulator = request.app.state.simulator
    return simulator


Sim = Annotated[Simulator, Depends(simulator_of)]
# dependencies are async so they run on the event loop: a sync one would run in the
# threadpool, and concurrent first requests for a new supplier key would each create it


async def authenticated(
    simulator: Sim,
    supplier_key: str,
    authorization: Annotated[str | None, Header(description="`Bearer <api_key>`")] = None,
) -> Supplier:
    return simulator.authenticate(supplier_key, authorization)


AuthedSupplier = Annotated[Supplier, Depends(authenticated)]

supplier_api = APIRouter(route_class=SupplierApiRoute, tags=["supplier API"])

_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "bad credentials"},
    404: {"description": "no such order"},
    409: {"description": "out of stock / idempotency key reused / not cancellable"},
    422: {"description": "rejected: not taken, never will be"},
    500: {"description": "simulated transient failure (nothing recorded)"},
}


@supplier_api.post(
    "/{supplier_key}/orders",
    status_code=202,
    response_model=PlaceOrderResponse,
    responses=_ERRORS,
)
async def place_order(
    simulator: Sim,
    supplier: AuthedSupplier,
    body: PlaceOrderRequest,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255)],
) -> dict[str, str]:
    await simulator.gate(supplier)
    return simulator.place_order(supplier, idempotency_key, body).response()


@supplier_api.get(
    "/{supplier_key}/orders/{supplier_order_ref}",
    response_model=OrderStatus,
    responses=_ERRORS,
)
async def order_status(
    simulator: Sim, supplier: AuthedSupplier, supplier_order_ref: str
) -> dict[str, Any]:
    await simulator.gate(supplier)
    return simulator.order(supplier, supplier_order_ref).status()


@supplier_api.post(
    "/{supplier_key}/orders/{supplier_order_ref}/cancel",
    response_model=CancelResponse,
    responses=_ERRORS,
)
async def cancel_order(
    simulator: Sim, supplier: AuthedSupplier, supplier_order_ref: str
) -> dict[str, str]:
    await simulator.gate(supplier)
    simulator.cancel(supplier, supplier_order_ref)
    return {"status": "cancelled"}


@supplier_api.post(
    "/{supplier_key}/returns",
    status_code=201,
    response_model=ReturnGranted,
    responses={
        **_ERRORS,
        409: {"description": "idempotency key reused with another body"},
        422: {"description": "refused (`error: refused`, `reason`), or malformed"},
    },
)
async def request_return(
    simulator: Sim,
    supplier: AuthedSupplier,
    body: ReturnRequest,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255)],
) -> dict[str, str]:
    await simulator.gate(supplier)
    return await simulator.request_return(supplier, idempotency_key, body)


control = APIRouter(prefix="/_control", tags=["simulator control"])

ControlKey = Annotated[str, Path(pattern=SUPPLIER_KEY_PATTERN)]


def _view(supplier: Supplier) -> ControlView:
    return ControlView(supplier_key=supplier.key, **supplier.control.model_dump())


@control.get("/{supplier_key}", response_model=ControlView)
async def get_control(simulator: Sim, supplier_key: ControlKey) -> ControlView:
    return _view(simulator.supplier(supplier_key))


@control.put("/{supplier_key}", response_model=ControlView)
async def put_control(simulator: Sim, supplier_key: ControlKey, patch: ControlPatch) -> ControlView:
    supplier = simulator.supplier(supplier_key)
    supplier.update(patch.changes())
    return _view(supplier)


@control.delete("/{supplier_key}", response_model=ControlView)
async def reset_supplier(simulator: Sim, supplier_key: ControlKey) -> ControlView:
    return _view(await simulator.reset(supplier_key))


@control.get("/{supplier_key}/orders", response_model=OrderList)
async def list_orders(simulator: Sim, supplier_key: ControlKey) -> OrderList:
    orders = simulator.supplier(supplier_key).orders.values()
    return OrderList.model_validate({"items": [o.view() for o in orders]})


@control.get("/{supplier_key}/stats", response_model=SupplierStats)
async def supplier_stats(simulator: Sim, supplier_key: ControlKey) -> SupplierStats:
    """Its orders by state and its deliveries by outcome: `failed` ones were given up on
    after every attempt (what the platform never heard from this supplier)."""
    return SupplierStats.model_validate(simulator.supplier(supplier_key).stats())


@control.get("/{supplier_key}/returns", response_model=ReturnList)
async def list_returns(simulator: Sim, supplier_key: ControlKey) -> ReturnList:
    """Every return request with its decision and how often it was asked for."""
    returns = simulator.supplier(supplier_key).returns.values()
    return ReturnList.model_validate({"items": [r.view() for r in returns]})


@control.get("/{supplier_key}/requests", response_model=RequestLog)
async def list_requests(simulator: Sim, supplier_key: ControlKey) -> RequestLog:
    """When each supplier API request arrived (authenticated ones, failed ones included)."""
    return RequestLog(items=list(simulator.supplier(supplier_key).requests))


health = APIRouter()


@health.get("/healthz")
async def healthz(simulator: Sim) -> dict[str, object]:
    return {"status": "ok", "pending_tasks": simulator.pending_tasks}
