"""Request bodies of the supplier HTTP API and callbacks, and how they read as commands."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from services.supplier.domain import Credentials, NewSupplier, Offer, SupplierChanges

_strict = ConfigDict(extra="forbid", str_strip_whitespace=True)
Sku = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Priority = Annotated[int, Field(ge=1, le=10)]
SlaHours = Annotated[float, Field(gt=0, le=24 * 60)]
RatePerSecond = Annotated[float, Field(gt=0, le=10_000)]


def _url(url: HttpUrl) -> str:
    return str(url).rstrip("/")


class CredentialsIn(BaseModel):
    model_config = _strict
    api_key: Annotated[str, Field(min_length=1, max_length=500)]
    webhook_secret: Annotated[str, Field(min_length=8, max_length=500)]

    def to_credentials(self) -> Credentials:
        return Credentials(self.api_key, self.webhook_secret)


class SupplierIn(BaseModel):
    model_config = _strict
    name: Name
    supplier_key: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
    api_base_url: HttpUrl
    credentials: CredentialsIn
    priority: Priority = 5
    ship_sla_hours: SlaHours = 48.0
    active: bool = True
    rate_limit_per_s: RatePerSecond | None = None

    def to_command(self) -> NewSupplier:
        return NewSupplier(
            name=self.name,
            supplier_key=self.supplier_key,
            api_base_url=_url(self.api_base_url),
            credentials=self.credentials.to_credentials(),
            priority=self.priority,
            ship_sla_hours=self.ship_sla_hours,
            active=self.active,
            rate_limit_per_s=self.rate_limit_per_s,
        )


class SupplierPatch(BaseModel):
    model_config = _strict
    name: Name | None = None
    api_base_url: HttpUrl | None = None
    credentials: CredentialsIn | None = None
    priority: Priority | None = None
    ship_sla_hours: SlaHours | None = None
    active: bool | None = None
    rate_limit_per_s: RatePerSecond | None = None

    NOT_NULL: ClassVar[tuple[str, ...]] = (
        "name",
        "api_base_url",
        "priority",
        "ship_sla_hours",
        "active",
    )

    def nulled(self) -> list[str]:
        """Fields sent as null that cannot be."""
        return [f for f in self.NOT_NULL if f in self.model_fields_set and getattr(self, f) is None]

    def to_command(self) -> SupplierChanges:
        return SupplierChanges(
            fields=frozenset(self.model_fields_set & SupplierChanges.EDITABLE),
            name=self.name,
            api_base_url=_url(self.api_base_url) if self.api_base_url is not None else None,
            priority=self.priority,
            ship_sla_hours=self.ship_sla_hours,
            active=self.active,
            rate_limit_per_s=self.rate_limit_per_s,
            credentials=self.credentials.to_credentials() if self.credentials else None,
        )


ExternalId = Annotated[str, Field(pattern=r"^(shopify|woocommerce):[a-z]+:[0-9A-Za-z_-]{1,64}$")]


class OfferIn(BaseModel):
    model_config = _strict
    sku: Sku
    supplier_sku: Sku
    unit_cost: Annotated[Decimal, Field(ge=0, le=Decimal(1_000_000), allow_inf_nan=False)]
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
    stock: Annotated[int, Field(ge=0, le=10_000_000)]
    lead_time_hours: Annotated[float, Field(ge=0, le=24 * 365)]
    external_ids: Annotated[list[ExternalId], Field(max_length=50)] | None = Field(
        None,
        description="marketplace ids this offer maps, for lines the shop sends without a SKU: "
        "`shopify:variant:<id>`, `shopify:product:<id>`, `woocommerce:product:<id>`, "
        "`woocommerce:variation:<id>`; given, they replace the offer's mapping",
    )

    def to_offer(self, supplier_id: str) -> Offer:
        return Offer(
            supplier_id,
            self.sku,
            self.supplier_sku,
            self.unit_cost,
            self.currency,
            self.stock,
            self.lead_time_hours,
            None if self.external_ids is None else tuple(dict.fromkeys(self.external_ids)),
        )


class CallbackIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["accepted", "rejected", "backordered", "dispatched"]
    reference: Annotated[str, Field(min_length=1, max_length=64)]
    supplier_order_ref: Annotated[str, Field(max_length=128)] | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None
    carrier: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    tracking_number: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    occurred_at: datetime | None = None


class TrackingIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    carrier: Annotated[str, Field(max_length=64)] = "unknown"
    tracking_number: Annotated[str, Field(min_length=1, max_length=128)]
    status: Literal["in_transit", "exception", "delivered"]
    occurred_at: datetime | None = None
    detail: Annotated[str, Field(max_length=500)] | None = None


class RouteLineIn(BaseModel):
    """`POST /v1/orders/{order_id}/lines/{line_id}/route`: to anyone, or to one supplier."""

    model_config = _strict

    supplier_id: str | None = Field(None, min_length=1, max_length=64)
    accept_negative_margin: bool = False
