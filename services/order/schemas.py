"""Order service request and response models: what a merchant may send and what it gets back.

Rules a merchant can rely on (every violation is a 422 naming the field):
- `currency` is an ISO-4217 code, `shipping_address.country` an ISO-3166 alpha-2 code;
- 1 to 500 lines, each `quantity` 1..10000, `unit_price` a non-negative decimal with
  no more decimals than the currency has (2 for USD, 0 for JPY, 3 for KWD);
- a SKU appears at most once per order (send one line with the total quantity: two
  lines of one SKU are rejected, not merged, so nothing is silently changed);
- text is trimmed, free of control characters and length-limited; any script
  (Chinese, Arabic, …) is welcome.
"""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, Self

import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    model_validator,
)
from pydantic_core import PydanticCustomError

from services.order.domain import (
    Address,
    Contact,
    LineInput,
    LineStage,
    Order,
    OrderLine,
    PlaceOrder,
)
from services.order.repository import CustomerContact, TimelineEntry
from shared.money import format_amount, minor_units

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""Unicode's control characters (category Cc): U+0000-U+001F and U+007F-U+009F, all of it."""


def _clean(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _country(value: str) -> str:
    if pycountry.countries.get(alpha_2=value) is None:
        raise ValueError("must be an ISO-3166 alpha-2 country code, e.g. US, CN, DE")
    return value


def _currency(value: str) -> str:
    if pycountry.currencies.get(alpha_3=value) is None:
        raise ValueError("must be an ISO-4217 currency code, e.g. USD, CNY, EUR")
    return value


_Clean = AfterValidator(_clean)
Text20 = Annotated[str, Field(min_length=1, max_length=20), _Clean]
Text100 = Annotated[str, Field(min_length=1, max_length=100), _Clean]
Text128 = Annotated[str, Field(min_length=1, max_length=128), _Clean]
Text200 = Annotated[str, Field(min_length=1, max_length=200), _Clean]
Text500 = Annotated[str, Field(min_length=1, max_length=500), _Clean]


CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$"), AfterValidator(_country)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$"), AfterValidator(_currency)]
Phone = Annotated[str, Field(pattern=r"^\+?[0-9][0-9 ()\-.]{4,30}$")]
Locale = Annotated[str, Field(max_length=16, pattern=r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8}){0,2}$")]
Channel = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]

_strict = ConfigDict(extra="forbid", str_strip_whitespace=True)


class CustomerIn(BaseModel):
    model_config = _strict
    name: Text200
    email: Annotated[EmailStr, Field(max_length=254)]
    phone: Phone | None = None
    locale: Locale | None = None


class AddressIn(BaseModel):
    model_config = _strict
    line1: Text200
    line2: Text200 | None = None
    city: Text100
    region: Text100 | None = None
    postal_code: Text20
    country: CountryCode

    def to_address(self) -> Address:
        return Address(
            line1=self.line1,
            line2=self.line2,
            city=self.city,
            region=self.region,
            postal_code=self.postal_code,
            country=self.country,
        )


class ShippingAddressIn(AddressIn):
    """`PUT /v1/orders/{id}/shipping-address`: the create body's address plus a phone, and
    the recipient's `name` (needed when a marketplace order came without one)."""

    phone: Phone | None = None
    name: Text200 | None = None


class HoldIn(BaseModel):
    model_config = _strict
    reason: Literal["manual"] = Field(description="only `manual` may be set by hand")
    note: Text500 = "held by merchant"


def _as_parsed(value: object) -> object:
    """Nothing; being there, it makes a JSON number the same Decimal from the body's bytes
    (`POST /v1/orders`) as from a parsed dict: without it, pydantic reads `100.0` from
    JSON as Decimal('100') but the float 100.0 as Decimal('100.0'), and the
    Idempotency-Key fingerprint (`model_dump`) would differ between the two paths."""
    return value


class LineIn(BaseModel):
    model_config = _strict
    sku: Annotated[
        str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")
    ]
    quantity: Annotated[int, Field(ge=1, le=10_000, strict=True)]
    unit_price: Annotated[
        Decimal,
        BeforeValidator(_as_parsed),
        Field(ge=0, le=Decimal("1000000"), allow_inf_nan=False),
    ]


class _OrderBody(BaseModel):
    """What every order body shares: channel, ids, currency and lines (and their rules)."""

    model_config = _strict
    channel: Channel
    external_id: Text128 | None = None
    currency: CurrencyCode
    lines: Annotated[list[LineIn], Field(min_length=1, max_length=500)]

    @model_validator(mode="after")
    def _lines_fit_the_currency_and_are_unique(self) -> Self:
        places = minor_units(self.currency)
        seen: dict[str, int] = {}
        for i, line in enumerate(self.lines):
            exponent = line.unit_price.normalize().as_tuple().exponent
            if isinstance(exponent, int) and -exponent > places:
                raise PydanticCustomError(
                    "money_precision",
                    "{currency} amounts have at most {places} decimals",
                    {"field": f"lines.{i}.unit_price", "currency": self.currency, "places": places},
                )
            if line.sku in seen:
                raise PydanticCustomError(
                    "duplicate_sku",
                    "SKU {sku} already appears in line {first}; "
                    "send one line with the total quantity",
                    {"field": f"lines.{i}.sku", "sku": line.sku, "first": seen[line.sku]},
                )
            seen[line.sku] = i
        return self

    def _lines(self) -> tuple[LineInput, ...]:
        return tuple(LineInput(ln.sku, ln.quantity, ln.unit_price) for ln in self.lines)


class OrderIn(_OrderBody):
    customer: CustomerIn
    shipping_address: AddressIn

    def to_command(self) -> PlaceOrder:
        c, a = self.customer, self.shipping_address
        return PlaceOrder(
            channel=self.channel,
            external_id=self.external_id,
            currency=self.currency,
            customer=Contact(name=c.name, email=str(c.email), phone=c.phone, locale=c.locale),
            shipping=a.to_address(),
            lines=self._lines(),
        )


class MarketplaceCustomerIn(BaseModel):
    """A paid marketplace order may come without a customer: every field is optional."""

    model_config = _strict
    name: Text200 | None = None
    email: Annotated[EmailStr, Field(max_length=254)] | None = None
    phone: Phone | None = None
    locale: Locale | None = None


class MarketplaceAddressIn(BaseModel):
    """A marketplace shipping address, possibly incomplete or absent (the order is then
    held `address_invalid` rather than refused); what is there must still be well-formed."""

    model_config = _strict
    line1: Text200 | None = None
    line2: Text200 | None = None
    city: Text100 | None = None
    region: Text100 | None = None
    postal_code: Text20 | None = None
    country: CountryCode | None = None


class MarketplaceOrderIn(_OrderBody):
    """A mapped Shopify/WooCommerce order: the storefront's rules, except that the gaps a
    paid order may have (no customer, no or a partial shipping address) are accepted and
    left for the intake rules to hold (`address_invalid`, the note naming the field)."""

    customer: MarketplaceCustomerIn = Field(default_factory=MarketplaceCustomerIn)
    shipping_address: MarketplaceAddressIn = Field(default_factory=MarketplaceAddressIn)

    def to_command(self) -> PlaceOrder:
        c, a = self.customer, self.shipping_address
        return PlaceOrder(
            channel=self.channel,
            external_id=self.external_id,
            currency=self.currency,
            customer=Contact(
                name=c.name or "", email=str(c.email or ""), phone=c.phone, locale=c.locale
            ),
            shipping=Address(
                line1=a.line1 or "",
                line2=a.line2,
                city=a.city or "",
                region=a.region,
                postal_code=a.postal_code or "",
                country=a.country or "",
            ),
            lines=self._lines(),
        )


class CancelIn(BaseModel):
    model_config = _strict
    reason: Text500 = "cancelled by merchant"


class RedactIn(BaseModel):
    model_config = _strict
    email: Annotated[EmailStr, Field(max_length=254)]


def rfc3339(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


_LINE_STATE = {0: "pending", 1: "confirmed", 2: "shipped", 3: "delivered"}


def _line_state(line: OrderLine) -> str:
    if line.routing_failed:
        return "routing_failed"
    if line.waiting and line.stage == LineStage.PENDING:
        return "waiting_supplier"
    return _LINE_STATE[int(line.stage)]


def render_order(order: Order) -> dict[str, Any]:
    """The order as the API shows it (no customer PII; see `/contact` for services)."""
    cur = order.currency
    return {
        "id": order.id,
        "status": order.status.value,
        "delayed": order.delayed,
        "channel": order.channel,
        "external_id": order.external_id,
        "shop_id": order.shop_id,
        "currency": cur,
        "total": format_amount(order.total, cur),
        "refunded_total": format_amount(order.refunded_total, cur),
        "lines": [
            {
                "line_id": ln.line_id,
                "sku": ln.sku,
                "quantity": ln.quantity,
                "unit_price": format_amount(ln.unit_price, cur),
                "state": _line_state(ln),
                "supplier_id": ln.supplier_id,
                "routing_failure": ln.routing_failed,
                "waiting_reason": ln.waiting,
            }
            for ln in order.lines
        ],
        "allocations": [
            {
                "supplier_id": a.supplier_id,
                "supplier_order_ref": a.supplier_order_ref,
                "line_ids": a.line_ids,
                "ship_by": rfc3339(a.ship_by),
                "confirmed_at": rfc3339(a.confirmed_at),
            }
            for a in order.allocations
        ],
        "shipments": [
            {
                "supplier_id": s.supplier_id,
                "carrier": s.carrier,
                "tracking_number": s.tracking_number,
                "line_ids": s.line_ids,
                "dispatched_at": rfc3339(s.dispatched_at),
                "delivered_at": rfc3339(s.delivered_at),
            }
            for s in order.shipments
        ],
        "shipping": {
            "city": order.shipping.city,
            "region": order.shipping.region,
            "postal_code": order.shipping.postal_code,
            "country": order.shipping.country,
        },
        "holds": [
            {"reason": h.reason.value, "note": h.note, "since": rfc3339(h.since)}
            for h in order.holds
        ],
        "locale": order.customer.locale,
        "created_at": rfc3339(order.created_at),
        "cancelled_at": rfc3339(order.cancelled_at),
        "cancel_reason": order.cancel_reason,
    }


def render_timeline(entries: list[TimelineEntry]) -> dict[str, Any]:
    return {
        "items": [
            {"type": e.type, "time": rfc3339(e.time), "source": e.source, "data": e.data}
            | ({"note": e.note} if e.note else {})
            for e in entries
        ],
        "next_cursor": None,
    }


class OrderOut(BaseModel):
    """Response schema (documentation); the body is built by `render_order`."""

    model_config = ConfigDict(extra="allow")
    id: str
    status: str
    delayed: bool
    channel: str
    external_id: str | None
    shop_id: str | None = Field(
        None, description="the registered shop whose order number external_id is, if any"
    )
    currency: str
    total: str
    lines: list[dict[str, Any]]
    allocations: list[dict[str, Any]]
    shipments: list[dict[str, Any]]
    created_at: str


class OrderPage(BaseModel):
    items: list[OrderOut]
    next_cursor: str | None


class TimelineItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    time: str
    source: str
    data: dict[str, Any]


class TimelineOut(BaseModel):
    items: list[TimelineItem]
    next_cursor: str | None


class ShipToOut(BaseModel):
    """The whole destination, as a supplier order carries it."""

    name: str | None
    phone: str | None
    email: str | None
    line1: str | None
    line2: str | None
    city: str | None
    region: str | None
    postal_code: str | None
    country: str | None


class CustomerContactOut(BaseModel):
    order_id: str
    name: str | None
    email: str | None
    phone: str | None
    locale: str | None
    redacted: bool


class ContactOut(CustomerContactOut):
    ship_to: ShipToOut | None = Field(
        None, description="null when the customer was redacted (see ship_to_unavailable)"
    )
    ship_to_unavailable: Literal["customer_redacted"] | None = None


def _contact_fields(order_id: str, c: Contact, redacted: bool) -> dict[str, Any]:
    """The customer's contact as other services read it; nothing but the locale once erased."""
    return {
        "order_id": order_id,
        "name": None if redacted else (c.name or None),
        "email": None if redacted else (c.email or None),
        "phone": None if redacted else c.phone,
        "locale": c.locale,
        "redacted": redacted,
    }


def render_contact(contact: CustomerContact) -> dict[str, Any]:
    """What notify (the customer's contact) and supplier (the ship-to) read; PII."""
    out = _contact_fields(contact.order_id, contact.customer, contact.redacted)
    assert contact.shipping is not None, "read with its ship-to"
    return out | _ship_to_fields(contact.customer, contact.shipping, contact.redacted)


def _ship_to_fields(c: Contact, s: Address, redacted: bool) -> dict[str, Any]:
    """The destination as a supplier order carries it (`ship_to`, `ship_to_unavailable`)."""
    if redacted:
        return {"ship_to": None, "ship_to_unavailable": "customer_redacted"}
    return {
        "ship_to": {
            # a marketplace order may lack some (it is held until they are given)
            "name": c.name or None,
            "phone": c.phone,
            "email": c.email or None,
            "line1": s.line1 or None,
            "line2": s.line2,
            "city": s.city or None,
            "region": s.region,
            "postal_code": s.postal_code or None,
            "country": s.country or None,
        },
        "ship_to_unavailable": None,
    }


CONTACT_LOOKUP_MAX = 100
"""Order ids one `POST /v1/contacts:lookup` may ask about."""

OrderId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class ContactLookupIn(BaseModel):
    model_config = _strict

    order_ids: list[OrderId] = Field(min_length=1, max_length=CONTACT_LOOKUP_MAX)
    ship_to: bool = Field(
        False,
        description="also each order's `ship_to` and `ship_to_unavailable`, as `GET "
        "/v1/orders/{id}/contact` gives them (the supplier service, placing orders)",
    )


class ContactLookupOut(BaseModel):
    items: list[ContactOut] = Field(
        description="`ship_to` and `ship_to_unavailable` only when asked for"
    )
    unknown: list[str] = Field(description="asked-for order ids the service does not know")


def render_contacts(asked: list[str], found: list[CustomerContact]) -> dict[str, Any]:
    """The lookup's answer: each known order's contact (in the order asked), the unknown ids."""
    by_id = {contact.order_id: contact for contact in found}
    items, unknown = [], []
    for order_id in dict.fromkeys(asked):  # each id once, in the order asked
        contact = by_id.get(order_id)
        if contact is None:
            unknown.append(order_id)
            continue
        item = _contact_fields(order_id, contact.customer, contact.redacted)
        if contact.shipping is not None:
            item |= _ship_to_fields(contact.customer, contact.shipping, contact.redacted)
        items.append(item)
    return {"items": items, "unknown": unknown}
