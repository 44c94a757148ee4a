"""Order service HTTP API: requests to commands, domain errors to statuses; nothing else."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel, ConfigDict, EmailStr, Field

from services.order import handlers
from services.order.domain import LineInput, Order, PlaceOrder
from services.order.settings import OrderSettings
from services.order.store import OrderUnitOfWork
from shared.http import NotFound, check_api_key
from shared.money import format_amount
from shared.runtime import ServiceRuntime

router = APIRouter(prefix="/v1", tags=["orders"])


def _runtime(request: Request) -> ServiceRuntime[OrderUnitOfWork]:
    runtime: ServiceRuntime[OrderUnitOfWork] = request.app.state.runtime
    return runtime


def _uow(runtime: Annotated[ServiceRuntime[OrderUnitOfWork], Depends(_runtime)]) -> OrderUnitOfWork:
    return runtime.uow()


def _api_key(
    runtime: Annotated[ServiceRuntime[OrderUnitOfWork], Depends(_runtime)],
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    settings: OrderSettings = runtime.settings  # type: ignore[assignment]
    check_api_key(x_api_key, settings.api_key_set)


UoWDep = Annotated[OrderUnitOfWork, Depends(_uow)]
ApiKeyDep = Annotated[None, Depends(_api_key)]

Str = Annotated[str, Field(min_length=1, max_length=200)]


class CustomerIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: Str
    email: EmailStr
    phone: Annotated[str, Field(max_length=32)] | None = None
    locale: Annotated[str, Field(max_length=16)] | None = None


class AddressIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    line1: Str
    line2: Annotated[str, Field(max_length=200)] | None = None
    city: Str
    region: Annotated[str, Field(max_length=100)] | None = None
    postal_code: Annotated[str, Field(min_length=1, max_length=32)]
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]


class LineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sku: Annotated[str, Field(min_length=1, max_length=128)]
    quantity: Annotated[int, Field(ge=1, le=10_000)]
    unit_price: Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    channel: Annotated[str, Field(min_length=1, max_length=32)] = "storefront"
    external_id: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    customer: CustomerIn
    shipping_address: AddressIn
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=500)]

    def to_command(self) -> PlaceOrder:
        return PlaceOrder(
            channel=self.channel,
            external_id=self.external_id,
            currency=self.currency,
            shipping_country=self.shipping_address.country,
            shipping_postal_code=self.shipping_address.postal_code,
            lines=tuple(LineInput(ln.sku, ln.quantity, ln.unit_price) for ln in self.lines),
        )


class LineOut(BaseModel):
    line_id: str
    sku: str
    quantity: int
    unit_price: str


class OrderOut(BaseModel):
    id: str
    status: str
    delayed: bool
    channel: str
    external_id: str | None
    currency: str
    total: str
    lines: list[LineOut]
    allocations: list[dict[str, object]] = []
    shipments: list[dict[str, object]] = []
    created_at: str

    @classmethod
    def of(cls, order: Order) -> OrderOut:
        return cls(
            id=order.id,
            status=order.status.value,
            delayed=order.delayed,
            channel=order.channel,
            external_id=order.external_id,
            currency=order.currency,
            total=format_amount(order.total, order.currency),
            lines=[
                LineOut(
                    line_id=ln.line_id,
                    sku=ln.sku,
                    quantity=ln.quantity,
                    unit_price=format_amount(ln.unit_price, order.currency),
                )
                for ln in order.lines
            ],
            created_at=order.created_at.isoformat().replace("+00:00", "Z"),
        )


@router.post(
    "/orders", status_code=201, response_model=OrderOut, summary="Place a storefront order"
)
async def create_order(body: OrderIn, uow: UoWDep, _: ApiKeyDep) -> OrderOut:
    order = await handlers.place_order(body.to_command(), uow)
    return OrderOut.of(order)


@router.get("/orders/{order_id}", response_model=OrderOut, summary="One order")
async def read_order(order_id: str, uow: UoWDep, _: ApiKeyDep) -> OrderOut:
    try:
        order = await handlers.get_order(order_id, uow)
    except handlers.OrderNotFound as exc:
        raise NotFound(str(exc)) from exc
    return OrderOut.of(order)
