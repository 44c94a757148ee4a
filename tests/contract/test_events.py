"""The event contract of DESIGN §2, checked against the models and the AsyncAPI catalogue."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from shared import asyncapi
from shared.bus import DLQ_SUFFIX, EVENT_TOPICS
from shared.consumer import dead_letter_headers
from shared.events import EVENT_TYPES, Envelope, EventData, new_envelope

pytestmark = pytest.mark.contract

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "asyncapi.yaml"
SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE_ENV = "DROPSHIP_UPDATE_SNAPSHOTS"

# Contract snapshot of DESIGN §2: the minimum data fields of every event type.
DESIGN_FIELDS: dict[str, tuple[str, ...]] = {
    "order-placed": (
        "order_id", "channel", "external_id", "currency", "lines",
        "shipping_country", "shipping_postal_code", "placed_at",
    ),
    "order-cancelled": ("order_id", "reason"),
    "supplier-confirmed": (
        "order_id", "supplier_id", "supplier_order_ref", "lines", "currency", "ship_by",
    ),
    "order-routing-failed": ("order_id", "line_ids", "reason"),
    "shipment-dispatched": ("order_id", "supplier_id", "carrier", "tracking_number", "line_ids"),
    "shipment-delayed": ("order_id", "supplier_id", "reason", "severity", "expected_by"),
    "shipment-delivered": ("order_id", "tracking_number", "delivered_at"),
    "notification-sent": ("order_id", "kind", "channel", "recipient_kind", "status"),
    # not in DESIGN §2: added to the catalogue by the structure issue (#11)
    "supplier-status-changed": ("supplier_id", "status", "reason", "changed_at"),
    # DESIGN §6 (second wave)
    "order-held": ("order_id", "reason", "note", "held_at"),
    "order-released": ("order_id", "released_at"),
    "order-lines-waiting": ("order_id", "line_ids", "reason", "since"),
    # DESIGN §6 marketplaces: a write-back that gave up pages ops (not named by DESIGN)
    "marketplace-sync-failed": (
        "order_id", "platform", "shop", "operation", "attempts", "error", "failed_at",
    ),
    # DESIGN §6 after-sales: return statuses, refund-issued and complaint tiers are fixed
    "return-requested": ("order_id", "return_id", "reason", "lines", "requested_at"),
    "return-authorized": (
        "order_id", "return_id", "supplier_id", "reason", "lines", "rma", "return_address",
        "authorized_at",
    ),
    "return-rejected": ("order_id", "return_id", "note", "rejected_at"),
    "return-received": ("order_id", "return_id", "received_at"),
    "refund-issued": (
        "order_id", "refund_id", "return_id", "amount", "currency", "reason", "lines",
        "cost_bearer", "supplier_id", "channel", "issued_at",
    ),
    "complaint-filed": (
        "order_id", "complaint_id", "tier", "respond_by", "resolve_by", "filed_at",
    ),
    "complaint-responded": (
        "order_id", "complaint_id", "tier", "by", "filed_at", "responded_at",
    ),
    "complaint-resolved": ("order_id", "complaint_id", "tier", "by", "filed_at", "resolved_at"),
}  # fmt: skip
OPTIONAL_FIELDS = {
    ("order-placed", "external_id"),
    ("shipment-delayed", "expected_by"),
    ("supplier-status-changed", "reason"),
    ("order-held", "note"),
    ("return-rejected", "note"),
    ("refund-issued", "return_id"),
    ("refund-issued", "lines"),
    ("refund-issued", "supplier_id"),
}
LINE_FIELDS = {
    "order-placed": ("line_id", "sku", "quantity", "unit_price"),
    "supplier-confirmed": ("line_id", "quantity", "unit_cost"),
}
ENUMS = {
    ("order-routing-failed", "reason"): {
        "no_offer", "out_of_stock", "all_suppliers_failed", "negative_margin",
        "unmapped_sku", "bad_address",  # DESIGN §6
    },
    ("shipment-delayed", "reason"): {
        "no_tracking_by_deadline", "carrier_exception", "supplier_backorder", "at_risk",
        "not_accepted_in_time", "lost_in_transit",  # DESIGN §6
    },
    ("shipment-delayed", "severity"): {"normal", "urgent", "major"},
    ("notification-sent", "recipient_kind"): {"customer", "ops"},
    **{
        (t, "reason"): {
            "damaged_in_transit", "not_as_described", "wrong_item", "not_received",
            "changed_mind",
        }
        for t in ("return-requested", "return-authorized", "refund-issued")
    },
    ("refund-issued", "cost_bearer"): {"supplier", "merchant"},
    ("marketplace-sync-failed", "operation"): {"fulfil", "cancel", "refund"},
    **{
        (t, "tier"): {"normal", "urgent", "major"}
        for t in ("complaint-filed", "complaint-responded", "complaint-resolved")
    },
}  # fmt: skip
AFTER_SALES = {
    "return-requested", "return-authorized", "return-rejected", "return-received",
    "refund-issued", "complaint-filed", "complaint-responded", "complaint-resolved",
}  # fmt: skip
# DESIGN §1: service -> (produces, consumes); metrics consumes every topic.
SERVICE_TABLE = {
    "order": (
        {"order-placed", "order-cancelled", "order-held", "order-released",
         "marketplace-sync-failed"} | AFTER_SALES,
        {"supplier-confirmed", "order-routing-failed", "shipment-dispatched",
         "shipment-delayed", "shipment-delivered", "order-lines-waiting",
         # its own: the shop hears of the cancellation and the refund (DESIGN §6)
         "order-cancelled", "refund-issued"},
    ),
    "supplier": (
        {"supplier-confirmed", "order-routing-failed", "shipment-dispatched",
         "shipment-delayed", "shipment-delivered", "supplier-status-changed",
         "order-lines-waiting"},
        {"order-placed", "order-cancelled", "order-held", "order-released",
         # quality score and chargebacks
         "return-authorized", "refund-issued"},
    ),
    "notify": (
        {"notification-sent"},
        {"shipment-delayed", "order-routing-failed", "order-cancelled", "shipment-dispatched",
         "supplier-status-changed", "order-held", "order-released", "order-lines-waiting",
         # customer notices (returns, refund) and complaint alerts
         "return-requested", "return-authorized", "return-rejected", "refund-issued",
         "complaint-filed", "complaint-responded", "complaint-resolved",
         # ops alert: a shop was not told (DESIGN §6 marketplaces)
         "marketplace-sync-failed"},
    ),
    "metrics": (
        set(),
        set(DESIGN_FIELDS) - {"supplier-status-changed", "order-lines-waiting"},
    ),
}  # fmt: skip
PII = {"email", "phone", "street", "line1", "line2", "name", "customer", "address"}
MONEY_FIELDS = {"unit_price", "unit_cost"}


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return asyncapi.document()


def resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    prefix = "#/components/schemas/"
    assert ref.startswith(prefix), ref
    found: dict[str, Any] = doc["components"]["schemas"][ref.removeprefix(prefix)]
    return found


def walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def property_names(schema: dict[str, Any]) -> set[str]:
    return {name for node in walk(schema) for name in node.get("properties", {})}


def test_checked_in_catalogue_is_current() -> None:
    assert CATALOGUE.exists(), f"{CATALOGUE} is missing: run `make asyncapi`"
    assert CATALOGUE.read_text(encoding="utf-8") == asyncapi.render(), (
        "docs/asyncapi.yaml is out of date with shared/events.py: run `make asyncapi` and commit it"
    )


def test_every_design_event_has_a_model_and_a_channel(doc: dict[str, Any]) -> None:
    assert set(EVENT_TYPES) == set(DESIGN_FIELDS) == set(EVENT_TOPICS)
    expected_channels = set(DESIGN_FIELDS) | {t + DLQ_SUFFIX for t in DESIGN_FIELDS}
    assert set(doc["channels"]) == expected_channels
    for event_type, model in EVENT_TYPES.items():
        assert model.event_type == event_type
        channel = doc["channels"][event_type]
        assert channel["address"] == event_type
        [message] = channel["messages"].values()
        assert message["contentType"] == "application/json"
        assert message["bindings"]["kafka"]["key"]["type"] == "string"
        payload = message["payload"]["properties"]
        assert payload["type"]["const"] == event_type
        assert payload["dataschema"]["const"] == f"{event_type}/v{model.version}"
        assert resolve(doc, payload["data"])["title"] == model.__name__


@pytest.mark.parametrize("event_type", sorted(DESIGN_FIELDS))
def test_design_fields_are_in_the_schema(doc: dict[str, Any], event_type: str) -> None:
    schema = doc["components"]["schemas"][EVENT_TYPES[event_type].__name__]
    fields = DESIGN_FIELDS[event_type]
    assert set(fields) <= set(schema["properties"]), f"{event_type} lost a DESIGN §2 field"
    required = {f for f in fields if (event_type, f) not in OPTIONAL_FIELDS}
    assert required <= set(schema["required"])
    if event_type in LINE_FIELDS:
        line = resolve(doc, schema["properties"]["lines"]["items"])
        assert set(LINE_FIELDS[event_type]) <= set(line["required"])
    for (enum_type, field), values in ENUMS.items():
        if enum_type == event_type:
            assert set(resolve(doc, schema["properties"][field])["enum"]) == values


def test_operations_follow_the_service_table(doc: dict[str, Any]) -> None:
    ops = doc["operations"].values()
    for service, (produces, consumes) in SERVICE_TABLE.items():
        mine = [op for op in ops if op["tags"] == [{"name": service}]]
        sent = {op["channel"]["$ref"].rsplit("/", 1)[1] for op in mine if op["action"] == "send"}
        received = {
            op["channel"]["$ref"].rsplit("/", 1)[1] for op in mine if op["action"] == "receive"
        }
        assert sent == produces | {t + DLQ_SUFFIX for t in consumes}, service
        assert received == consumes, service
    for op in ops:
        channel = doc["channels"][op["channel"]["$ref"].rsplit("/", 1)[1]]
        for ref in op["messages"]:
            assert ref["$ref"].rsplit("/", 1)[1] in channel["messages"]


def test_dead_letter_channels_document_the_dlq_headers(doc: dict[str, Any]) -> None:
    produced = {name for name, _ in dead_letter_headers(ValueError("x"), 3, "t", 0, 1, "g")}
    for event_type in DESIGN_FIELDS:
        channel = doc["channels"][event_type + DLQ_SUFFIX]
        assert channel["address"] == event_type + DLQ_SUFFIX
        [message] = channel["messages"].values()
        assert set(message["headers"]["required"]) == produced


@pytest.mark.parametrize("event_type", sorted(DESIGN_FIELDS))
def test_no_customer_pii_in_any_event(doc: dict[str, Any], event_type: str) -> None:
    schema = EVENT_TYPES[event_type].model_json_schema()
    names = property_names(schema)
    assert not names & PII, f"{event_type} carries PII fields {names & PII}"
    assert not [n for n in names if "email" in n or "phone" in n or "street" in n]


def test_order_placed_drops_customer_fields_a_producer_passes() -> None:
    data = EVENT_TYPES["order-placed"].model_validate(
        {
            "order_id": "o-1", "channel": "web", "currency": "USD",
            "lines": [{"line_id": "l1", "sku": "S", "quantity": 1, "unit_price": "1.00"}],
            "shipping_country": "US", "shipping_postal_code": "10001",
            "placed_at": "2024-05-01T10:00:00Z",
            "email": "a@example.com", "phone": "+1 555", "name": "Ann", "street": "1 Main St",
        }
    )  # fmt: skip
    assert not set(new_envelope(data).data) & PII


def test_money_is_a_decimal_string_in_every_schema(doc: dict[str, Any]) -> None:
    for node in walk(doc["components"]["schemas"]):
        assert "number" not in (node.get("type"), *[s.get("type") for s in node.get("anyOf", [])])
    for model in EVENT_TYPES.values():
        for mode in ("validation", "serialization"):
            schema = model.model_json_schema(mode=mode)
            money = [
                props[name]
                for node in walk(schema)
                for props in [node.get("properties", {})]
                for name in props
                if name in MONEY_FIELDS
            ]
            for prop in money:
                assert prop["type"] == "string" and "anyOf" not in prop, (model, mode)
                assert prop["pattern"] == r"^-?\d+(\.\d+)?$"


def _order_placed_bytes(unit_price: str) -> bytes:
    envelope = {
        "specversion": "1.0", "id": "e-1", "type": "order-placed", "source": "order",
        "subject": "o-1", "time": "2024-05-01T10:00:00Z", "dataschema": "order-placed/v1",
        "data": {
            "order_id": "o-1", "channel": "web", "currency": "EUR",
            "lines": [{"line_id": "l1", "sku": "S", "quantity": 2, "unit_price": "PRICE"}],
            "shipping_country": "DE", "shipping_postal_code": "10115",
            "placed_at": "2024-05-01T10:00:00Z",
        },
    }  # fmt: skip
    return json.dumps(envelope).replace('"PRICE"', unit_price).encode()


def test_money_round_trips_as_a_string() -> None:
    payload = Envelope.from_bytes(_order_placed_bytes('"12.50"')).payload()
    envelope = new_envelope(payload, time=datetime(2024, 5, 1, tzinfo=UTC))
    wire = json.loads(envelope.to_bytes())
    assert wire["data"]["lines"][0]["unit_price"] == "12.50"
    again = Envelope.from_bytes(envelope.to_bytes()).payload()
    assert str(again.model_dump()["lines"][0]["unit_price"]) == "12.50"
    assert again.model_dump()["lines"][0]["unit_price"] == Decimal("12.50")


@pytest.mark.parametrize(("number", "expected"), [("12.5", "12.5"), ("0.1", "0.1"), ("7", "7")])
def test_a_json_number_is_accepted_but_sent_as_a_string(number: str, expected: str) -> None:
    payload = Envelope.from_bytes(_order_placed_bytes(number)).payload()
    line = payload.model_dump(mode="json")["lines"][0]
    assert line["unit_price"] == expected
    assert (
        json.loads(new_envelope(payload).to_bytes())["data"]["lines"][0]["unit_price"] == expected
    )


def _snapshot(model: type[EventData]) -> str:
    return json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n"


@pytest.mark.parametrize("event_type", sorted(DESIGN_FIELDS))
def test_schema_changes_only_with_a_version_bump(event_type: str) -> None:
    model = EVENT_TYPES[event_type]
    path = SNAPSHOTS / f"{event_type}.v{model.version}.json"
    current = _snapshot(model)
    if os.environ.get(UPDATE_ENV) == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(current, encoding="utf-8")
    how = (
        f"bump `version` of {model.__name__} in shared/events.py for an incompatible change, "
        f"or regenerate deliberately with {UPDATE_ENV}=1 pytest {Path(__file__).relative_to(ROOT)}"
    )
    assert path.exists(), f"no schema snapshot {path.name}: {how}"
    assert path.read_text(encoding="utf-8") == current, f"{event_type} schema changed: {how}"


def test_snapshots_belong_to_known_versions() -> None:
    known = {f"{t}.v{v}.json" for t, m in EVENT_TYPES.items() for v in range(1, m.version + 1)}
    stray = {p.name for p in SNAPSHOTS.glob("*.json")} - known
    assert not stray, f"snapshots of unknown event types or versions: {sorted(stray)}"
