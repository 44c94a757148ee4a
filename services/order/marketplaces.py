"""Shopify and WooCommerce webhooks: signatures, and orders mapped to the storefront body."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qs

from services.order.errors import InvalidMarketplaceOrder
from shared.money import minor_units

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_LOCALE = re.compile(r"^([A-Za-z]{2,3})(?:[-_]([A-Za-z]{4}))?(?:[-_]([A-Za-z]{2}|[0-9]{3}))?$")


class MarketplacePayloadError(InvalidMarketplaceOrder, ValueError):
    """A marketplace payload that cannot be mapped; `field` is a dotted path into it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", [{"field": f"body.{field}", "reason": reason}])
        self.field = field
        self.reason = reason


def sign(raw: bytes, secret: str) -> str:
    """Base64 of HMAC-SHA256 of the raw body: Shopify's and WooCommerce's webhook signature."""
    digest = hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def verify(raw: bytes, header: str | None, secret: str | None) -> bool:
    """Whether `header` is the signature of `raw` under `secret` (constant-time comparison)."""
    if not header or not secret:
        return False
    return hmac.compare_digest(sign(raw, secret).encode("ascii"), header.encode("utf-8"))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, with every non-integer number as an exact Decimal."""
    try:
        value = json.loads(raw, parse_float=Decimal, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise MarketplacePayloadError("body", "not a JSON object")
    return value


def _text(value: object) -> str | None:
    """A non-empty, stripped string (numbers as their text), else None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, str):
        return value.strip() or None
    return None


def _object(payload: dict[str, Any], key: str, path: str, *, required: bool) -> dict[str, Any]:
    value = payload.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise MarketplacePayloadError(path, "missing" if value is None else "not an object")
    return value


def _id(payload: dict[str, Any]) -> str:
    value = payload.get("id")
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).strip():
        raise MarketplacePayloadError("id", "missing" if value is None else "not an id")
    return str(value).strip()


def _line_items(payload: dict[str, Any]) -> list[dict[str, Any]]:
    items = payload.get("line_items")
    if items is None:
        raise MarketplacePayloadError("line_items", "missing")
    if not isinstance(items, list):
        raise MarketplacePayloadError("line_items", "not a list")
    if not items:
        raise MarketplacePayloadError("line_items", "empty: the order has no lines")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise MarketplacePayloadError(f"line_items.{i}", "not an object")
    return items


UNMAPPED_SKU_PREFIX = "unmapped/"
"""A line sent without a SKU gets `unmapped/<platform>/<variant|variation|product|line>/<id>`
and carries its platform ids (`external_ids`, e.g. `shopify:variant:<id>`): the order is
accepted, and an offer whose `external_ids` name one of them maps the line; without one
the line cannot be routed (the supplier reports it, reason `unmapped_sku`)."""


def _sku(item: dict[str, Any], i: int, platform: str = "shopify") -> str:
    sku = _text(item.get("sku"))
    if sku is not None:
        return sku
    for key, kind in (
        ("variant_id", "variant"),
        ("variation_id", "variation"),
        ("product_id", "product"),
        ("id", "line"),
    ):
        ref = _text(item.get(key))
        if ref and ref != "0":  # WooCommerce sends variation_id 0 for a simple product
            return f"{UNMAPPED_SKU_PREFIX}{platform}/{kind}/{ref}"
    return f"{UNMAPPED_SKU_PREFIX}{platform}/line/{i + 1}"


def _external_ids(item: dict[str, Any], platform: str) -> list[str] | None:
    """A SKU-less line's platform ids (`shopify:variant:<id>`, most specific first), by which
    an offer may map it; None when the line has a SKU."""
    if _text(item.get("sku")) is not None:
        return None
    kinds = (("variant_id", "variant"), ("variation_id", "variation"), ("product_id", "product"))
    refs = [(kind, _text(item.get(key))) for key, kind in kinds]
    return [f"{platform}:{kind}:{ref}" for kind, ref in refs if ref and ref != "0"]


def _line(item: dict[str, Any], i: int, platform: str, unit_price: str) -> dict[str, Any]:
    line = {"sku": _sku(item, i, platform), "quantity": _quantity(item, i)}
    line["unit_price"] = unit_price
    external_ids = _external_ids(item, platform)
    return line if external_ids is None else {**line, "external_ids": external_ids}


def _shopify_unit_price(item: dict[str, Any], i: int, currency: str | None) -> str:
    """What the customer paid per unit: `price` less the line's discount allocations."""
    price = Decimal(_price(item.get("price"), f"line_items.{i}.price"))
    allocations = item.get("discount_allocations")
    quantity = item.get("quantity")
    if not isinstance(allocations, list) or not allocations:
        return format(price, "f")
    if type(quantity) is not int or quantity <= 0:
        return format(price, "f")  # the storefront model reports the quantity
    discount = sum(
        (_decimal(a.get("amount")) or Decimal(0) for a in allocations if isinstance(a, dict)),
        Decimal(0),
    )
    step = Decimal(1).scaleb(-minor_units(currency or ""))
    unit = max(price - discount / quantity, Decimal(0))
    return format(unit.quantize(step, rounding=ROUND_HALF_UP), "f")


def _quantity(item: dict[str, Any], i: int) -> Any:
    quantity = item.get("quantity")
    if quantity is None:
        raise MarketplacePayloadError(f"line_items.{i}.quantity", "missing")
    return quantity  # the storefront model checks it is a positive integer


def _decimal(value: object) -> Decimal | None:
    """An exact, finite Decimal from a JSON number or decimal string, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        value = repr(value)  # the shortest text that round-trips, not the binary expansion
    if not isinstance(value, int | str | Decimal):
        return None
    try:
        number = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        return None
    # finite and of a sane size (18 digits either side is more than any price needs)
    return number if number.is_finite() and abs(number.adjusted()) <= 18 else None


def _price(value: object, path: str) -> str:
    number = _decimal(value)
    if number is None:
        raise MarketplacePayloadError(path, "missing" if value is None else "not a decimal amount")
    return format(number, "f")


def _person(first: object, last: object) -> str | None:
    first_name, last_name = _text(first), _text(last)
    if first_name and last_name:
        if _CJK.search(first_name) and _CJK.search(last_name):
            return last_name + first_name  # family name first, no space: 王小明
        return f"{first_name} {last_name}"
    return first_name or last_name


def _locale(value: object) -> str | None:
    """A BCP-47-ish tag with the usual casing ("zh-cn", "zh_CN" -> "zh-CN"); None if unusable."""
    text = _text(value)
    match = _LOCALE.match(text) if text else None
    if match is None:
        return None
    language, script, region = match.groups()
    parts = [language.lower()]
    if script:
        parts.append(script.title())
    if region:
        parts.append(region.upper())
    return "-".join(parts)


def _first(*values: object) -> str | None:
    for value in values:
        text = _text(value)
        if text is not None:
            return text
    return None


def _compact(mapping: dict[str, Any]) -> dict[str, Any]:
    """Without None values: the storefront model then reports a missing required field."""
    return {key: value for key, value in mapping.items() if value is not None}


def shopify_order(payload: dict[str, Any]) -> dict[str, Any]:
    """A Shopify `orders/create` payload as a storefront order body (channel "shopify")."""
    external_id = _id(payload)
    # no shipping address (or customer) is accepted: the order is held `address_invalid`
    shipping = _object(payload, "shipping_address", "shipping_address", required=False)
    customer = _object(payload, "customer", "customer", required=False)
    billing = _object(payload, "billing_address", "billing_address", required=False)
    items = _line_items(payload)
    name = _first(  # composed first: Shopify's `name` is "first last", even for 王小明
        _person(shipping.get("first_name"), shipping.get("last_name")),
        shipping.get("name"),
        _person(customer.get("first_name"), customer.get("last_name")),
        billing.get("name"),
    )
    return {
        "channel": "shopify",
        "external_id": external_id,
        "currency": _text(payload.get("currency")),
        "customer": _compact(
            {
                "name": name,
                "email": _first(
                    payload.get("email"), payload.get("contact_email"), customer.get("email")
                ),
                "phone": _first(payload.get("phone"), customer.get("phone"), shipping.get("phone")),
                "locale": _locale(payload.get("customer_locale")),
            }
        ),
        "shipping_address": _compact(
            {
                "line1": _text(shipping.get("address1")),
                "line2": _text(shipping.get("address2")),
                "city": _text(shipping.get("city")),
                "region": _first(shipping.get("province_code"), shipping.get("province")),
                "postal_code": _text(shipping.get("zip")),
                "country": _text(shipping.get("country_code")),
            }
        ),
        "lines": [
            _line(item, i, "shopify", _shopify_unit_price(item, i, _text(payload.get("currency"))))
            for i, item in enumerate(items)
        ],
    }


def shopify_new_order(payload: dict[str, Any]) -> dict[str, Any]:
    """`shopify_order` of an `orders/create` payload, which is never already cancelled.

    The topic header is not signed: a captured cancellation replayed as a creation must not
    bring the order to life.
    """
    if payload.get("cancelled_at") is not None:
        raise MarketplacePayloadError("cancelled_at", "set: this is not a new order")
    return shopify_order(payload)


def shopify_cancelled_id(payload: dict[str, Any]) -> str:
    """The Shopify order id of an `orders/cancelled` payload, whose `cancelled_at` is set.

    The topic header is not signed: a captured `orders/create` replayed as
    `orders/cancelled` has no `cancelled_at`, and cancels nothing.
    """
    if not _text(payload.get("cancelled_at")):
        raise MarketplacePayloadError("cancelled_at", "missing: this order is not cancelled")
    return _id(payload)


def shopify_redact_email(payload: dict[str, Any]) -> str | None:
    """The customer e-mail of a `customers/redact` compliance payload, if it names one.

    Only the compliance shape counts (`customer.id` and `orders_to_redact`): an order
    payload replayed under this unsigned topic also has a `customer`, and redacts nothing.
    """
    if "line_items" in payload:
        raise MarketplacePayloadError("line_items", "present: this is an order, not a request")
    customer = _object(payload, "customer", "customer", required=True)
    if customer.get("id") is None:
        raise MarketplacePayloadError("customer.id", "missing")
    if not isinstance(payload.get("orders_to_redact"), list):
        raise MarketplacePayloadError("orders_to_redact", "missing or not a list")
    return _text(customer.get("email"))


def _woo_unit_price(item: dict[str, Any], i: int, currency: str | None) -> str:
    """total (after coupons: what the customer paid) / quantity when exact at the currency's
    precision, else subtotal / quantity, else `price` rounded to it.

    WooCommerce may store a unit price finer than the currency (e.g. 8.333333 for 3 items
    at 25.00); we keep the cent-rounded (half-up) unit price rather than refuse the order.
    """
    quantity = item.get("quantity")
    step = Decimal(1).scaleb(-minor_units(currency or ""))
    for key in ("total", "subtotal"):
        amount = _decimal(item.get(key))
        if amount is not None and type(quantity) is int and quantity > 0:
            unit = (amount / quantity).quantize(step)
            if unit * quantity == amount:
                return format(unit, "f")
    price = Decimal(_price(item.get("price"), f"line_items.{i}.price"))
    return format(price.quantize(step, rounding=ROUND_HALF_UP), "f")


def woocommerce_order(payload: dict[str, Any]) -> dict[str, Any]:
    """A WooCommerce REST v3 `order.created` payload as a storefront order body."""
    external_id = _id(payload)
    # a blank (or absent) shipping address is accepted: the order is held `address_invalid`
    shipping = _object(payload, "shipping", "shipping", required=False)
    billing = _object(payload, "billing", "billing", required=False)
    items = _line_items(payload)
    currency = _text(payload.get("currency"))
    return {
        "channel": "woocommerce",
        "external_id": external_id,
        "currency": currency,
        "customer": _compact(
            {
                "name": _first(
                    _person(shipping.get("first_name"), shipping.get("last_name")),
                    _person(billing.get("first_name"), billing.get("last_name")),
                ),
                "email": _text(billing.get("email")),
                "phone": _first(billing.get("phone"), shipping.get("phone")),
            }
        ),
        "shipping_address": _compact(
            {
                "line1": _text(shipping.get("address_1")),
                "line2": _text(shipping.get("address_2")),
                "city": _text(shipping.get("city")),
                "region": _text(shipping.get("state")),
                "postal_code": _text(shipping.get("postcode")),
                "country": _text(shipping.get("country")),
            }
        ),
        "lines": [
            _line(item, i, "woocommerce", _woo_unit_price(item, i, currency))
            for i, item in enumerate(items)
        ],
    }


def woocommerce_is_cancelled(payload: dict[str, Any]) -> bool:
    return payload.get("status") == "cancelled"


def woocommerce_id(payload: dict[str, Any]) -> str:
    return _id(payload)


def is_woocommerce_ping(raw: bytes) -> bool:
    """WooCommerce's check of a new delivery URL: a form-encoded `webhook_id=<n>` body."""
    if len(raw) > 1024:
        return False
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return False
    return set(fields) == {"webhook_id"}
