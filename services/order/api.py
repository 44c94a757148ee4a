"""Order service HTTP API: requests to commands, results to responses, domain errors to statuses.

Routes translate and handlers decide: a route builds the command, calls one handler and
renders its result; domain errors propagate to `DOMAIN_ERRORS`, mapped once for every
route (webhooks included) by `shared.http.install_domain_errors`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import AwareDatetime, ValidationError

from services.order import handlers
from services.order.domain import Order, Status
from services.order.errors import (
    AddressFixRequired,
    CannotCancel,
    DuplicateExternalOrder,
    IdempotencyConflict,
    InvalidAddress,
    InvalidCursor,
    InvalidMarketplaceOrder,
    NotOnHold,
    OrderClosed,
    OrderNotFound,
    SupplierHasOrder,
)
from services.order.intake_writer import IntakeWriter
from services.order.repository import OrderFilter
from services.order.schemas import (
    CancelIn,
    Channel,
    ContactLookupIn,
    ContactLookupOut,
    ContactOut,
    HoldIn,
    OrderIn,
    OrderOut,
    OrderPage,
    RedactIn,
    ShippingAddressIn,
    TimelineOut,
    render_contact,
    render_contacts,
    render_order,
    render_timeline,
)
from services.order.settings import OrderSettings
from services.order.store import OrderUnitOfWork
from shared.http import ErrorMapping, Unprocessable, check_api_key, check_bearer
from shared.runtime import ServiceRuntime

DOMAIN_ERRORS: dict[type[Exception], ErrorMapping] = {
    OrderNotFound: ErrorMapping(404, "not_found"),
    CannotCancel: ErrorMapping(409, "already_shipped"),
    IdempotencyConflict: ErrorMapping(409, "idempotency_key_reused"),
    DuplicateExternalOrder: ErrorMapping(409, "duplicate_external_id"),
    OrderClosed: ErrorMapping(409, "order_closed"),
    SupplierHasOrder: ErrorMapping(409, "supplier_has_order"),
    NotOnHold: ErrorMapping(409, "not_on_hold"),
    AddressFixRequired: ErrorMapping(409, "address_fix_required"),
    InvalidAddress: ErrorMapping(422, "validation_error"),
    InvalidCursor: ErrorMapping(422, "validation_error"),
    InvalidMarketplaceOrder: ErrorMapping(422, "validation_error"),
}
"""Every order-service domain error (`services.order.errors`) as the error shape."""

router = APIRouter(prefix="/v1")


OrderRuntime = ServiceRuntime[OrderUnitOfWork, OrderSettings]


def runtime_of(request: Request) -> OrderRuntime:
    runtime: OrderRuntime = request.app.state.runtime
    return runtime


async def _runtime(request: Request) -> OrderRuntime:
    return runtime_of(request)  # async: no threadpool hop per request


Runtime = Annotated[OrderRuntime, Depends(_runtime)]


def settings_of(runtime: Runtime) -> OrderSettings:
    return runtime.settings


async def new_uow(runtime: Runtime) -> OrderUnitOfWork:
    return runtime.uow()


async def api_key(
    runtime: Runtime,
    x_api_key: Annotated[str | None, Header(description="Merchant API key")] = None,
) -> str:
    check_api_key(x_api_key, settings_of(runtime).api_key_set)
    assert x_api_key is not None
    return x_api_key


async def admin_key(
    runtime: Runtime,
    x_api_key: Annotated[str | None, Header(description="Admin API key")] = None,
) -> None:
    check_api_key(x_api_key, settings_of(runtime).admin_key_set)


async def service_token(
    runtime: Runtime,
    authorization: Annotated[str | None, Header(description="Bearer service token")] = None,
) -> None:
    check_bearer(authorization, settings_of(runtime).service_token.get_secret_value())


UoW = Annotated[OrderUnitOfWork, Depends(new_uow)]
ApiKey = Annotated[str, Depends(api_key)]
AdminKey = Annotated[None, Depends(admin_key)]
ServiceToken = Annotated[None, Depends(service_token)]


async def create_order(
    request: Request,
    body: OrderIn,
    key: ApiKey,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JSONResponse:
    idem = None
    rendered = _RenderOnce()
    if idempotency_key is not None:
        scope = hashlib.sha256(key.encode()).hexdigest()[:32]
        idem = handlers.Idempotency(
            scope,
            idempotency_key,
            order_fingerprint(body),
            snapshot=rendered,
        )
    writer: IntakeWriter = request.app.state.intake_writer
    match await writer.place(body.to_command(), idem):
        case handlers.Replayed(snapshot):
            return JSONResponse(snapshot, status_code=201, headers={"Idempotent-Replayed": "true"})
        case handlers.Placed(order):
            return JSONResponse(rendered(order), status_code=201)


def order_fingerprint(body: OrderIn) -> str:
    """An order body's Idempotency-Key fingerprint: SHA-256 of its validated fields as
    sorted-key JSON, so bodies that validate to the same order match whatever their key
    order or spacing. Kept as it is: every key stored so far holds this very hash, and
    processes of another release read the keys this one stores."""
    dumped = json.dumps(body.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(dumped.encode()).hexdigest()


class _RenderOnce:
    """`render_order` remembered for the last order it rendered: the Idempotency-Key snapshot
    stored with a new order is the response's body, rendered once. An order placed again
    (a group that fell back to one by one builds a new one) is rendered anew."""

    __slots__ = ("_body", "_order")

    def __init__(self) -> None:
        self._order: Order | None = None
        self._body: dict[str, Any] = {}

    def __call__(self, order: Order) -> dict[str, Any]:
        if order is not self._order:
            self._order, self._body = order, render_order(order)
        return self._body


async def _create_from_bytes(request: Request) -> Response | None:
    """`create_order` with the body validated straight from its bytes; None when anything is
    unusual (not JSON, an invalid body or header), for FastAPI's path to answer as ever."""
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        return None
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 255:
        return None
    try:
        body = OrderIn.model_validate_json(await request.body())
    except ValidationError:
        return None
    key = await api_key(runtime_of(request), request.headers.get("x-api-key"))
    return await create_order(request, body, key, idempotency_key)


class _FromBytesRoute(APIRoute):
    """`POST /v1/orders` validates a well-formed body with `model_validate_json` (no dict in
    between); any other request takes FastAPI's own handler, the body already read, so its
    422s, 401s and the OpenAPI schema stay exactly FastAPI's."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        fastapi_handler = super().get_route_handler()

        async def handler(request: Request) -> Response:
            fast = await _create_from_bytes(request)
            return fast if fast is not None else await fastapi_handler(request)

        return handler


router.add_api_route(
    "/orders",
    create_order,
    methods=["POST"],
    status_code=201,
    response_model=OrderOut,
    tags=["orders"],
    summary="Place a storefront order",
    responses={
        409: {"description": "Idempotency-Key reused with another body, or duplicate external_id"}
    },
    route_class_override=_FromBytesRoute,
)


@router.get(
    "/orders", response_model=OrderPage, tags=["orders"], summary="List orders, newest first"
)
async def list_orders(
    uow: UoW,
    runtime: Runtime,
    _: ApiKey,
    status: Status | None = None,
    channel: Channel | None = None,
    created_from: Annotated[AwareDatetime | None, Query(description="inclusive, RFC 3339")] = None,
    created_to: Annotated[AwareDatetime | None, Query(description="exclusive, RFC 3339")] = None,
    external_id: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=128,
            description="the shop's order number (shops number alone: one per shop may match)",
        ),
    ] = None,
    shop_id: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="the orders of one registered shop"),
    ] = None,
    waiting: Annotated[
        bool | None, Query(description="true: orders with a line waiting for a supplier")
    ] = None,
    delayed: Annotated[bool | None, Query(description="true: orders with a delay")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    if created_from and created_to and created_from >= created_to:
        raise Unprocessable(
            "created_from must be before created_to",
            details=[{"field": "query.created_from", "reason": "must be before created_to"}],
        )
    try:
        window = _utc(created_from), _utc(created_to)
    except OverflowError as exc:
        raise Unprocessable(
            "created_from/created_to out of range",
            details=[{"field": "query.created_from", "reason": "date out of range"}],
        ) from exc
    flt = OrderFilter(
        status.value if status else None,
        channel,
        *window,
        external_id=external_id,
        shop_id=shop_id,
        waiting=waiting,
        delayed=delayed,
    )
    orders, next_cursor = await handlers.list_orders(flt, limit, cursor, uow)
    return {"items": [render_order(o) for o in orders], "next_cursor": next_cursor}


def _utc(value: datetime | None) -> datetime | None:
    return None if value is None else value.astimezone(UTC)


@router.get("/orders/{order_id}", response_model=OrderOut, tags=["orders"], summary="One order")
async def read_order(order_id: str, uow: UoW, _: ApiKey) -> dict[str, Any]:
    return render_order(await handlers.get_order(order_id, uow))


@router.get(
    "/orders/{order_id}/timeline",
    response_model=TimelineOut,
    tags=["orders"],
    summary="Every event that touched the order, in event order",
)
async def read_timeline(order_id: str, uow: UoW, _: ApiKey) -> dict[str, Any]:
    return render_timeline(await handlers.timeline(order_id, uow))


@router.post(
    "/orders/{order_id}/cancel",
    response_model=OrderOut,
    tags=["orders"],
    summary="Cancel an order that has not shipped (409 once it has)",
)
async def cancel(
    order_id: str, uow: UoW, _: ApiKey, body: Annotated[CancelIn | None, Body()] = None
) -> dict[str, Any]:
    reason = (body or CancelIn()).reason
    return render_order(await handlers.cancel_order(order_id, reason, uow))


@router.post(
    "/orders/{order_id}/hold",
    response_model=OrderOut,
    tags=["orders"],
    summary="Hold an order by hand: not routed until released",
    responses={409: {"description": "cancelled, or a supplier already has the order"}},
)
async def hold(order_id: str, body: HoldIn, uow: UoW, _: ApiKey) -> dict[str, Any]:
    return render_order(await handlers.hold_order(order_id, body.note, uow))


@router.post(
    "/orders/{order_id}/release",
    response_model=OrderOut,
    tags=["orders"],
    summary="Lift the manual and high-value holds",
    responses={409: {"description": "not on hold, or only a valid address can lift its hold"}},
)
async def release(order_id: str, uow: UoW, _: ApiKey) -> dict[str, Any]:
    return render_order(await handlers.release_order(order_id, uow))


@router.put(
    "/orders/{order_id}/shipping-address",
    response_model=OrderOut,
    tags=["orders"],
    summary="Correct the shipping address (and phone); a valid one lifts address_invalid",
    responses={
        409: {"description": "cancelled, or a supplier already has the order"},
        422: {"description": "breaks the destination country's rules (field and rule named)"},
    },
)
async def change_shipping_address(
    order_id: str, body: ShippingAddressIn, uow: UoW, _: ApiKey
) -> dict[str, Any]:
    address = body.to_address()
    changed = await handlers.change_address(order_id, address, body.phone, uow, name=body.name)
    return render_order(changed)


@router.get(
    "/orders/{order_id}/contact",
    response_model=ContactOut,
    tags=["service-to-service"],
    summary="Customer contact details and ship-to (service token only; never logged)",
    description="`ship_to` is the whole destination a supplier order carries. For a "
    "redacted customer the answer is still 200 with `redacted: true`, `ship_to: null` and "
    '`ship_to_unavailable: "customer_redacted"`.',
)
async def read_contact(order_id: str, uow: UoW, _: ServiceToken) -> dict[str, Any]:
    return render_contact(await handlers.contact(order_id, uow))


@router.post(
    "/contacts:lookup",
    response_model=ContactLookupOut,
    response_model_exclude_unset=True,  # no `ship_to` keys unless asked for
    tags=["service-to-service"],
    summary="Many orders' customer contacts at once (service token only; never logged)",
    description="Up to 100 `order_ids` read together. Each known order's `name`, `email`, "
    "`phone`, `locale` and `redacted` as `GET /v1/orders/{id}/contact` gives them, and with "
    "`ship_to: true` its `ship_to` and `ship_to_unavailable` too; ids the service does not "
    "know are listed in `unknown` (the single lookup's 404).",
    responses={422: {"description": "no ids, more than 100, or a malformed id (field named)"}},
)
async def lookup_contacts(body: ContactLookupIn, uow: UoW, _: ServiceToken) -> dict[str, Any]:
    found = await handlers.contacts(body.order_ids, uow, ship_to=body.ship_to)
    return render_contacts(body.order_ids, found)


@router.post(
    "/customers/redact",
    tags=["privacy"],
    summary="Erase a customer's name, e-mail, phone and street from every order",
)
async def redact(body: RedactIn, uow: UoW, _: AdminKey) -> dict[str, int]:
    return {"redacted": await handlers.redact_customer(str(body.email), uow)}
