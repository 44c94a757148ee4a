"""Shopify and WooCommerce adapters: signatures, pings, payloads as storefront bodies."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from services.order.marketplaces import (
    MarketplacePayloadError,
    is_woocommerce_ping,
    load_json,
    shopify_cancelled_id,
    shopify_order,
    shopify_redact_email,
    sign,
    verify,
    woocommerce_id,
    woocommerce_is_cancelled,
    woocommerce_order,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SECRET = "whsec_0f6b7c2d9e8a4b1c"


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture(name: str) -> dict[str, Any]:
    return load_json(raw(name))


# --- Shopify mapping ---------------------------------------------------------------------


def test_shopify_order_maps_every_field() -> None:
    assert shopify_order(fixture("shopify/orders_create.json")) == {
        "channel": "shopify",
        "external_id": "5906483609841",
        "currency": "USD",
        "customer": {
            "name": "Emily Carter",
            "email": "emily.carter@example.com",
            "phone": "+13035550142",  # the order's phone is null: the customer's
            "locale": "en",
        },
        "shipping_address": {
            "line1": "1600 Glenarm Pl",
            "line2": "Apt 1204",
            "city": "Denver",
            "region": "CO",
            "postal_code": "80202",
            "country": "US",
        },
        "lines": [
            {"sku": "BCB-L-001", "quantity": 2, "unit_price": "19.99"},
            {"sku": "SSWB-750-BLK", "quantity": 1, "unit_price": "24.50"},
        ],
    }


def test_shopify_chinese_order_keeps_the_text_and_normalizes_the_locale() -> None:
    assert shopify_order(fixture("shopify/orders_create_zh.json")) == {
        "channel": "shopify",
        "external_id": "5912345678961",
        "currency": "CNY",
        "customer": {
            "name": "王小明",  # family name first, as Chinese names are written
            "email": "wang.xiaoming@example.cn",
            "phone": "+8613800138000",
            "locale": "zh-CN",
        },
        "shipping_address": {
            "line1": "天河区天河路385号",
            "line2": "太古汇一座2801室",
            "city": "广州市",
            "region": "GD",
            "postal_code": "510620",
            "country": "CN",
        },
        "lines": [
            {"sku": "TEA-CUP-CEL-6", "quantity": 1, "unit_price": "268.00"},
            {"sku": "TEA-TRAY-BMB", "quantity": 2, "unit_price": "89.90"},
        ],
    }


@pytest.mark.parametrize(
    ("given", "expected"),
    [("zh-CN", "zh-CN"), ("zh-cn", "zh-CN"), ("zh_CN", "zh-CN"), ("EN", "en"), ("en-us", "en-US")],
)
def test_shopify_locale_is_normalized(given: str, expected: str) -> None:
    payload = fixture("shopify/orders_create.json")
    payload["customer_locale"] = given
    assert shopify_order(payload)["customer"]["locale"] == expected


def test_shopify_unusable_or_missing_locale_is_left_out() -> None:
    payload = fixture("shopify/orders_create.json")
    for value in (None, "", "not a locale"):
        payload["customer_locale"] = value
        assert "locale" not in shopify_order(payload)["customer"]


def test_shopify_fallbacks_for_email_phone_name_and_region() -> None:
    payload = fixture("shopify/orders_create.json")
    payload["email"] = None
    payload["contact_email"] = None
    payload["customer"]["phone"] = None
    payload["shipping_address"].update(
        {"first_name": None, "last_name": None, "name": None, "province_code": None}
    )
    payload["shipping_address"]["address2"] = ""
    order = shopify_order(payload)
    assert order["customer"] == {
        "name": "Emily Carter",  # from the customer
        "email": "emily.carter@example.com",  # customer.email
        "phone": "+1 303-555-0142",  # the shipping address's
        "locale": "en",
    }
    assert order["shipping_address"]["region"] == "Colorado"
    assert "line2" not in order["shipping_address"]


def test_shopify_prices_stay_exact() -> None:
    payload = fixture("shopify/orders_create.json")
    payload["line_items"][0]["price"] = "0.10"
    payload["line_items"][1]["price"] = Decimal("1234567.8900")
    lines = shopify_order(payload)["lines"]
    assert [line["unit_price"] for line in lines] == ["0.10", "1234567.8900"]


def test_shopify_cancelled_id_and_redact_email() -> None:
    assert shopify_cancelled_id(fixture("shopify/orders_cancelled.json")) == "5906483609841"
    redact = fixture("shopify/customers_redact.json")
    assert shopify_redact_email(redact) == "emily.carter@example.com"
    redact["customer"]["email"] = None
    assert shopify_redact_email(redact) is None


def test_shopify_order_id_is_the_same_in_create_and_cancel() -> None:
    created = shopify_order(fixture("shopify/orders_create.json"))
    assert created["external_id"] == shopify_cancelled_id(fixture("shopify/orders_cancelled.json"))


# --- Shopify errors ----------------------------------------------------------------------


def _shopify_error(mutate: Any) -> MarketplacePayloadError:
    payload = fixture("shopify/orders_create.json")
    mutate(payload)
    with pytest.raises(MarketplacePayloadError) as caught:
        shopify_order(payload)
    return caught.value


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.pop("id"), "id"),
        (lambda p: p.update(id=None), "id"),
        (lambda p: p.update(id=True), "id"),
        (lambda p: p.pop("line_items"), "line_items"),
        (lambda p: p.update(line_items=[]), "line_items"),
        (lambda p: p.update(line_items={"sku": "X"}), "line_items"),
        (lambda p: p["line_items"][0].pop("price"), "line_items.0.price"),
        (lambda p: p["line_items"][1].update(price="12,50"), "line_items.1.price"),
        (lambda p: p["line_items"][1].update(price="NaN"), "line_items.1.price"),
        (lambda p: p["line_items"][1].update(price="1e999999"), "line_items.1.price"),
        (lambda p: p["line_items"][0].pop("quantity"), "line_items.0.quantity"),
        (lambda p: p["line_items"].append("gift"), "line_items.2"),
        (lambda p: p.update(shipping_address="1600 Glenarm Pl"), "shipping_address"),
        (lambda p: p.update(shipping_address=[]), "shipping_address"),
        (lambda p: p.update(customer=[]), "customer"),
    ],
)
def test_shopify_errors_name_the_field(mutate: Any, field: str) -> None:
    error = _shopify_error(mutate)
    assert error.field == field
    assert error.reason
    assert isinstance(error, ValueError)
    assert str(error).startswith(f"{field}: ")


@pytest.mark.parametrize("sku", [None, "", "  ", "absent"])
def test_a_shopify_line_without_sku_is_accepted_under_its_variant_id(sku: object) -> None:
    """DESIGN §6: a null or empty SKU never refuses the order; the line is unmapped."""
    payload = fixture("shopify/orders_create.json")
    if sku == "absent":
        payload["line_items"][0].pop("sku")
        payload["line_items"][1]["sku"] = None
    else:
        payload["line_items"][1]["sku"] = sku
    lines = shopify_order(payload)["lines"]
    assert lines[1]["sku"] == "unmapped/shopify/variant/44123456821809"
    assert lines[1]["unit_price"] == "24.50"


def test_shopify_does_not_validate_business_rules() -> None:
    payload = fixture("shopify/orders_create.json")
    payload["currency"] = "usd"
    payload["line_items"][0]["quantity"] = 0
    order = shopify_order(payload)  # the storefront model rejects these, not the mapping
    assert order["currency"] == "usd"
    assert order["lines"][0]["quantity"] == 0


def test_shopify_redact_without_customer_names_the_field() -> None:
    with pytest.raises(MarketplacePayloadError) as caught:
        shopify_redact_email({"shop_id": 1, "shop_domain": "x.myshopify.com"})
    assert caught.value.field == "customer"


def test_shopify_cancelled_without_id_names_the_field() -> None:
    with pytest.raises(MarketplacePayloadError) as caught:
        shopify_cancelled_id({"name": "#1001", "cancelled_at": "2024-09-14T11:05:47-06:00"})
    assert caught.value.field == "id"


def test_shopify_cancelled_without_cancelled_at_is_not_a_cancellation() -> None:
    with pytest.raises(MarketplacePayloadError) as caught:
        shopify_cancelled_id({"id": 1001, "cancelled_at": None})
    assert caught.value.field == "cancelled_at"


# --- WooCommerce mapping -----------------------------------------------------------------


def test_woocommerce_order_maps_every_field() -> None:
    assert woocommerce_order(fixture("woocommerce/order_created.json")) == {
        "channel": "woocommerce",
        "external_id": "4827",
        "currency": "EUR",
        "customer": {
            "name": "Sophie Müller",
            "email": "sophie.mueller@example.de",
            "phone": "+49 30 12345678",
        },
        "shipping_address": {  # state is "" in the payload: no region
            "line1": "Kastanienallee 12",
            "line2": "Hinterhaus, 3. OG",
            "city": "Berlin",
            "postal_code": "10435",
            "country": "DE",
        },
        "lines": [
            {"sku": "LT-GT-2-NAT", "quantity": 3, "unit_price": "10.10"},  # 30.30 / 3
            {"sku": "EB-350-WS", "quantity": 1, "unit_price": "14.95"},
        ],
    }


def test_woocommerce_float_prices_arrive_as_exact_decimals() -> None:
    payload = fixture("woocommerce/order_created.json")
    assert payload["line_items"][0]["price"] == Decimal("10.1")
    assert isinstance(payload["line_items"][1]["price"], Decimal)
    assert load_json(b'{"price": 10.1}')["price"] == Decimal("10.1")


def test_woocommerce_unit_price_falls_back_to_rounded_price_when_subtotal_does_not_divide() -> None:
    payload = fixture("woocommerce/order_created.json")
    payload["line_items"][0]["subtotal"] = "30.31"  # 10.1033...: not exact to the cent
    payload["line_items"][1]["subtotal"] = None
    lines = woocommerce_order(payload)["lines"]
    assert [line["unit_price"] for line in lines] == ["10.10", "14.95"]


def test_woocommerce_unit_price_uses_the_currency_precision() -> None:
    payload = fixture("woocommerce/order_created.json")
    payload["currency"] = "JPY"
    payload["line_items"][0].update(subtotal="3000", price=1000)
    payload["line_items"][1].update(subtotal="1000", quantity=3, price=Decimal("333.333333"))
    lines = woocommerce_order(payload)["lines"]
    assert [line["unit_price"] for line in lines] == ["1000", "333"], "rounded to whole yen"


def test_woocommerce_absurd_subtotal_falls_back_to_price() -> None:
    payload = fixture("woocommerce/order_created.json")
    payload["line_items"][0]["subtotal"] = "1e30"
    assert woocommerce_order(payload)["lines"][0]["unit_price"] == "10.10"


def test_woocommerce_price_when_only_a_float_is_given() -> None:
    payload = fixture("woocommerce/order_created.json")
    payload["line_items"][0].update(subtotal="", price=10.1)  # not loaded with load_json
    assert woocommerce_order(payload)["lines"][0]["unit_price"] == "10.10"


def test_woocommerce_name_and_phone_fallbacks() -> None:
    payload = fixture("woocommerce/order_created.json")
    payload["shipping"].update(first_name="", last_name="", phone="+49 151 23456789")
    payload["billing"].update(first_name="Jonas", last_name="Weber", phone="")
    customer = woocommerce_order(payload)["customer"]
    assert customer == {
        "name": "Jonas Weber",
        "email": "sophie.mueller@example.de",
        "phone": "+49 151 23456789",
    }


def test_woocommerce_status_and_id() -> None:
    created = fixture("woocommerce/order_created.json")
    cancelled = fixture("woocommerce/order_cancelled.json")
    assert not woocommerce_is_cancelled(created)
    assert woocommerce_is_cancelled(cancelled)
    assert woocommerce_id(created) == woocommerce_id(cancelled) == "4827"
    assert not woocommerce_is_cancelled({"status": "refunded"})


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda p: p.pop("id"), "id"),
        (lambda p: p.update(id=""), "id"),
        (lambda p: p.update(line_items=[]), "line_items"),
        (
            lambda p: p["line_items"][0].update(subtotal=None, total=None, price=None),
            "line_items.0.price",
        ),
        (lambda p: p["line_items"][1].pop("quantity"), "line_items.1.quantity"),
        (lambda p: p.update(shipping="Hauptstraße 1"), "shipping"),
    ],
)
def test_woocommerce_errors_name_the_field(mutate: Any, field: str) -> None:
    payload = fixture("woocommerce/order_created.json")
    mutate(payload)
    with pytest.raises(MarketplacePayloadError) as caught:
        woocommerce_order(payload)
    assert caught.value.field == field


@pytest.mark.parametrize(
    "mutate",
    [
        lambda p: p.pop("shipping"),
        # a virtual-goods order: WooCommerce sends the shipping fields empty
        lambda p: p["shipping"].update(address_1="", address_2="", city="", state="",
                                       postcode="", country=""),
    ],
)  # fmt: skip
def test_a_woocommerce_order_without_shipping_address_is_mapped_for_a_hold(mutate: Any) -> None:
    """Held `address_invalid` by intake (DESIGN §6), never refused: the customer paid."""
    payload = fixture("woocommerce/order_created.json")
    mutate(payload)
    order = woocommerce_order(payload)
    assert order["shipping_address"] == {}
    assert order["customer"]["email"] == "sophie.mueller@example.de"


@pytest.mark.parametrize("key", ["shipping_address", "customer"])
def test_a_shopify_order_without_shipping_address_or_customer_is_mapped(key: str) -> None:
    payload = fixture("shopify/orders_create.json")
    payload[key] = None
    order = shopify_order(payload)
    assert order["external_id"] == "5906483609841"
    assert (order["shipping_address"] == {}) is (key == "shipping_address")


def test_woocommerce_id_without_id_names_the_field() -> None:
    with pytest.raises(MarketplacePayloadError) as caught:
        woocommerce_id({"number": "4827"})
    assert caught.value.field == "id"


# --- signatures --------------------------------------------------------------------------

VENDOR_FIXTURES = [
    ("X-Shopify-Hmac-Sha256", "shopify/orders_create.json"),
    ("X-WC-Webhook-Signature", "woocommerce/order_created.json"),
]


def test_sign_is_base64_hmac_sha256() -> None:
    body = raw("shopify/orders_create.json")
    expected = base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    assert sign(body, SECRET) == expected
    # a published vector: HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog")
    assert sign(b"The quick brown fox jumps over the lazy dog", "key") == (
        "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
    )


@pytest.mark.parametrize(("header", "name"), VENDOR_FIXTURES)
def test_valid_signature_verifies(header: str, name: str) -> None:
    body = raw(name)
    assert verify(body, sign(body, SECRET), SECRET), header


@pytest.mark.parametrize(("header", "name"), VENDOR_FIXTURES)
def test_wrong_secret_fails(header: str, name: str) -> None:
    body = raw(name)
    assert not verify(body, sign(body, "another-secret"), SECRET), header


@pytest.mark.parametrize(("header", "name"), VENDOR_FIXTURES)
def test_one_tampered_byte_fails(header: str, name: str) -> None:
    body = raw(name)
    signature = sign(body, SECRET)
    at = body.index(b"19.99" if name.startswith("shopify") else b"10.1")
    tampered = body[:at] + b"2" + body[at + 1 :]
    assert len(tampered) == len(body)
    assert not verify(tampered, signature, SECRET), header


@pytest.mark.parametrize(("header", "name"), VENDOR_FIXTURES)
def test_missing_header_fails(header: str, name: str) -> None:
    body = raw(name)
    assert not verify(body, None, SECRET), header
    assert not verify(body, "", SECRET), header


@pytest.mark.parametrize(("header", "name"), VENDOR_FIXTURES)
def test_empty_or_missing_secret_fails(header: str, name: str) -> None:
    body = raw(name)
    assert not verify(body, sign(body, ""), ""), header
    assert not verify(body, sign(body, ""), None), header


def test_garbage_and_non_ascii_headers_fail_without_raising() -> None:
    body = b'{"id": 1}'
    assert not verify(body, "not base64 at all", SECRET)
    assert not verify(body, "签名", SECRET)
    assert not verify(body, sign(body, SECRET)[:-1], SECRET)


# --- bodies and pings --------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'"text"', b"null", b"\xff\xfe{", b'{"a": NaN}', b"[" * 100_000],
)
def test_load_json_rejects_anything_but_an_object(body: bytes) -> None:
    with pytest.raises(MarketplacePayloadError) as caught:
        load_json(body)
    assert (caught.value.field, caught.value.reason) == ("body", "not a JSON object")


def test_load_json_keeps_unicode_and_integers() -> None:
    body = json.dumps({"id": 5906483609841, "city": "广州市", "price": 19.99}).encode()
    assert load_json(body) == {"id": 5906483609841, "city": "广州市", "price": Decimal("19.99")}


@pytest.mark.parametrize("body", [b"webhook_id=17", b"webhook_id=1"])
def test_woocommerce_ping_is_detected(body: bytes) -> None:
    assert is_woocommerce_ping(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"webhook_id": 17}',
        b"webhook_id=17&id=4827",
        b"id=4827",
        b"",
        b"\xff\xfe",
    ],
)
def test_woocommerce_ping_is_not_an_order(body: bytes) -> None:
    assert not is_woocommerce_ping(body)


def test_a_json_order_body_is_not_a_ping() -> None:
    assert not is_woocommerce_ping(raw("woocommerce/order_created.json"))
    assert not is_woocommerce_ping(raw("shopify/orders_create.json"))


def test_fixtures_are_what_they_claim() -> None:
    created = fixture("woocommerce/order_created.json")
    cancelled = fixture("woocommerce/order_cancelled.json")
    assert created["status"] == "processing"
    assert created["currency"] == "EUR"
    rest = copy.deepcopy(cancelled)
    for key in ("status", "date_modified", "date_modified_gmt", "needs_processing", "is_editable"):
        rest[key] = created[key]
    assert rest == created  # the same order, cancelled
    zh = fixture("shopify/orders_create_zh.json")
    assert (zh["currency"], zh["customer_locale"]) == ("CNY", "zh-CN")
