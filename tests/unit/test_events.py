"""The CloudEvents envelope and event payload models of shared.events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.events import (
    EVENT_TYPES,
    ComplaintFiled,
    ComplaintResolved,
    ComplaintResponded,
    Envelope,
    EventData,
    InvalidEvent,
    MarketplaceSyncFailed,
    NotificationSent,
    OrderCancelled,
    OrderHeld,
    OrderLinesWaiting,
    OrderPlaced,
    OrderReleased,
    OrderRoutingFailed,
    RefundIssued,
    ReturnAuthorized,
    ReturnReceived,
    ReturnRejected,
    ReturnRequested,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
    SupplierStatusChanged,
    new_envelope,
)

pytestmark = pytest.mark.unit

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def order_placed(unit_price: Decimal = Decimal("12.50")) -> OrderPlaced:
    return OrderPlaced.model_validate(
        {
            "order_id": "o-1",
            "channel": "shopify",
            "external_id": "#1001",
            "currency": "USD",
            "lines": [{"line_id": "l1", "sku": "MUG", "quantity": 2, "unit_price": unit_price}],
            "shipping_country": "US",
            "shipping_postal_code": "10001",
            "placed_at": T0,
        }
    )


SAMPLES: dict[str, EventData] = {
    "order-placed": order_placed(),
    "order-cancelled": OrderCancelled(order_id="o-1", reason="customer request"),
    "supplier-confirmed": SupplierConfirmed.model_validate(
        {
            "order_id": "o-1",
            "supplier_id": "s-1",
            "supplier_order_ref": "PO-9",
            "lines": [{"line_id": "l1", "quantity": 2, "unit_cost": "7.25"}],
            "currency": "USD",
            "ship_by": T0 + timedelta(hours=48),
        }
    ),
    "order-routing-failed": OrderRoutingFailed.model_validate(
        {"order_id": "o-1", "line_ids": ["l1"], "reason": "out_of_stock"}
    ),
    "shipment-dispatched": ShipmentDispatched(
        order_id="o-1", supplier_id="s-1", carrier="ups", tracking_number="1Z9", line_ids=["l1"]
    ),
    "shipment-delayed": ShipmentDelayed.model_validate(
        {"order_id": "o-1", "supplier_id": "s-1", "reason": "at_risk", "severity": "urgent"}
    ),
    "shipment-delivered": ShipmentDelivered(order_id="o-1", tracking_number="1Z9", delivered_at=T0),
    "notification-sent": NotificationSent(
        order_id="o-1", kind="delay", channel="email", recipient_kind="customer", status="sent"
    ),
    "supplier-status-changed": SupplierStatusChanged(
        supplier_id="sup-1", status="unavailable", reason="breaker_open", changed_at=T0
    ),
    "order-held": OrderHeld(order_id="o-1", reason="address_invalid", note="x", held_at=T0),
    "order-released": OrderReleased(order_id="o-1", released_at=T0),
    "order-lines-waiting": OrderLinesWaiting(
        order_id="o-1", line_ids=["l1"], reason="breaker_open", since=T0
    ),
    "return-requested": ReturnRequested.model_validate(
        {
            "order_id": "o-1",
            "return_id": "ret-1",
            "reason": "damaged_in_transit",
            "lines": [{"line_id": "l1", "sku": "MUG", "quantity": 1, "supplier_id": "s-1"}],
            "requested_at": T0,
        }
    ),
    "return-authorized": ReturnAuthorized.model_validate(
        {
            "order_id": "o-1",
            "return_id": "ret-1",
            "supplier_id": "s-1",
            "reason": "damaged_in_transit",
            "lines": [{"line_id": "l1", "sku": "MUG", "quantity": 1}],
            "rma": "RMA-7",
            "return_address": "Returns dock 4, Shenzhen",
            "authorized_at": T0,
        }
    ),
    "return-rejected": ReturnRejected(
        order_id="o-1", return_id="ret-1", note="worn", rejected_at=T0
    ),
    "return-received": ReturnReceived(order_id="o-1", return_id="ret-1", received_at=T0),
    "refund-issued": RefundIssued.model_validate(
        {
            "order_id": "o-1",
            "refund_id": "ref-1",
            "return_id": "ret-1",
            "amount": "12.50",
            "currency": "USD",
            "reason": "damaged_in_transit",
            "lines": [{"line_id": "l1", "quantity": 1, "supplier_id": "s-1"}],
            "cost_bearer": "supplier",
            "supplier_id": "s-1",
            "channel": "api",
            "issued_at": T0,
        }
    ),
    "complaint-filed": ComplaintFiled(
        order_id="o-1",
        complaint_id="cmp-1",
        tier="urgent",
        respond_by=T0 + timedelta(hours=4),
        resolve_by=T0 + timedelta(hours=48),
        filed_at=T0,
    ),
    "complaint-responded": ComplaintResponded(
        order_id="o-1", complaint_id="cmp-1", tier="urgent", by="ana", filed_at=T0, responded_at=T0
    ),
    "complaint-resolved": ComplaintResolved(
        order_id="o-1", complaint_id="cmp-1", tier="urgent", by="ana", filed_at=T0, resolved_at=T0
    ),
    "marketplace-sync-failed": MarketplaceSyncFailed(
        order_id="o-1",
        platform="shopify",
        shop="demo.myshopify.com",
        operation="fulfil",
        external_id="5906483609841",
        tracking_number="1Z999AA10123456784",
        attempts=8,
        error="fulfillmentCreate: HTTP 500",
        failed_at=T0,
    ),
}


def raw_envelope(**changes: Any) -> dict[str, Any]:
    envelope: dict[str, Any] = json.loads(new_envelope(order_placed(), time=T0).to_bytes())
    for key, value in changes.items():
        if value is None:
            envelope.pop(key)
        else:
            envelope[key] = value
    return envelope


def test_samples_cover_every_event_type() -> None:
    assert set(SAMPLES) == set(EVENT_TYPES)


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_envelope_round_trips_through_bytes(event_type: str) -> None:
    envelope = new_envelope(
        SAMPLES[event_type], traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01"
    )
    again = Envelope.from_bytes(envelope.to_bytes())
    assert again == envelope
    assert again.payload() == SAMPLES[event_type]
    assert type(again.payload()) is EVENT_TYPES[event_type]


def test_envelope_without_traceparent_omits_it_and_keeps_extensions() -> None:
    envelope = Envelope.model_validate({**raw_envelope(), "partitionkey": "o-1"})
    wire = json.loads(envelope.to_bytes())
    assert "traceparent" not in wire
    assert Envelope.from_bytes(envelope.to_bytes()).model_extra == {"partitionkey": "o-1"}


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"{not json",
        b"[]",
        json.dumps(raw_envelope(id=None)).encode(),
        json.dumps(raw_envelope(id="")).encode(),
        json.dumps(raw_envelope(type="order-exploded")).encode(),
        json.dumps(raw_envelope(data=None)).encode(),
        json.dumps(raw_envelope(specversion="0.3")).encode(),
        json.dumps(raw_envelope(time="2024-05-01T10:00:00")).encode(),
    ],
    ids=[
        "none",
        "empty",
        "invalid-json",
        "not-an-object",
        "missing-id",
        "empty-id",
        "unknown-type",
        "missing-data",
        "wrong-specversion",
        "naive-time",
    ],
)
def test_from_bytes_rejects_invalid_envelopes(raw: bytes | None) -> None:
    with pytest.raises(InvalidEvent):
        Envelope.from_bytes(raw)


def _line(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        data["lines"][0].update(changes)

    return mutate


@pytest.mark.parametrize(
    "mutate",
    [
        _line(quantity=0),
        _line(quantity=-1),
        _line(unit_price="twelve"),
        _line(unit_price="NaN"),
        _line(unit_price="Infinity"),
        lambda d: d.update(currency="usd"),
        lambda d: d.update(placed_at="2024-05-01T10:00:00"),
        lambda d: d.update(lines=[]),
        lambda d: d.update(shipping_country="USA"),
        lambda d: d.pop("order_id"),
    ],
    ids=[
        "quantity-0",
        "quantity-negative",
        "price-not-a-number",
        "price-nan",
        "price-infinite",
        "currency-lowercase",
        "naive-datetime",
        "no-lines",
        "country-alpha3",
        "missing-order-id",
    ],
)
def test_payload_rejects_schema_invalid_data(mutate: Callable[[dict[str, Any]], None]) -> None:
    raw = raw_envelope()
    mutate(raw["data"])
    envelope = Envelope.from_bytes(json.dumps(raw).encode())
    with pytest.raises(InvalidEvent, match="order-placed data invalid"):
        envelope.payload()


def test_payload_rejects_unknown_enum_values() -> None:
    data = {"order_id": "o-1", "line_ids": ["l1"], "reason": "bored"}
    envelope = Envelope.from_bytes(
        json.dumps(raw_envelope(type="order-routing-failed", data=data)).encode()
    )
    with pytest.raises(InvalidEvent):
        envelope.payload()


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_new_envelope_fills_the_cloudevents_attributes(event_type: str) -> None:
    data = SAMPLES[event_type]
    envelope = new_envelope(data)
    assert envelope.specversion == "1.0"
    assert envelope.type == event_type
    expected = "sup-1" if event_type == "supplier-status-changed" else "o-1"
    assert envelope.subject == data.subject == expected
    assert envelope.key == expected.encode()
    assert envelope.dataschema == f"{event_type}/v1"
    assert envelope.source == EVENT_TYPES[event_type].source_service
    assert envelope.datacontenttype == "application/json"
    assert envelope.time.utcoffset() == timedelta(0)
    assert uuid.UUID(envelope.id)


def test_new_envelope_sources_follow_the_service_table() -> None:
    sources = {t: new_envelope(d).source for t, d in SAMPLES.items()}
    assert sources == {
        "order-placed": "order",
        "order-cancelled": "order",
        "supplier-confirmed": "supplier",
        "order-routing-failed": "supplier",
        "shipment-dispatched": "supplier",
        "shipment-delayed": "supplier",
        "shipment-delivered": "supplier",
        "notification-sent": "notify",
        "supplier-status-changed": "supplier",
        "order-held": "order",
        "order-released": "order",
        "order-lines-waiting": "supplier",
        **{t: "order" for t in (
            "return-requested", "return-authorized", "return-rejected", "return-received",
            "refund-issued", "complaint-filed", "complaint-responded", "complaint-resolved",
            "marketplace-sync-failed",
        )},
    }  # fmt: skip


def test_new_envelope_ids_are_unique() -> None:
    ids = {new_envelope(SAMPLES["order-placed"]).id for _ in range(1000)}
    assert len(ids) == 1000


def test_new_envelope_keeps_given_time_and_traceparent() -> None:
    envelope = new_envelope(SAMPLES["order-cancelled"], time=T0, traceparent="00-x-y-01")
    assert envelope.time == T0
    assert envelope.traceparent == "00-x-y-01"


amounts = st.integers(min_value=0, max_value=4).flatmap(
    lambda places: st.decimals(places=places, allow_nan=False, allow_infinity=False)
)


@given(amount=amounts)
def test_any_decimal_amount_round_trips_exactly(amount: Decimal) -> None:
    raw = new_envelope(order_placed(unit_price=amount)).to_bytes()
    wire = json.loads(raw)["data"]["lines"][0]["unit_price"]
    assert isinstance(wire, str)
    assert wire == format(amount, "f")
    payload = Envelope.from_bytes(raw).payload()
    assert isinstance(payload, OrderPlaced)
    back = payload.lines[0].unit_price
    assert back == amount
    assert str(back) == str(amount)
