"""The event contract: the CloudEvents 1.0 envelope and one pydantic model per event type."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)

__all__ = [
    "EVENT_TYPES",
    "Envelope",
    "EventData",
    "InvalidEvent",
    "Money",
    "OrderEvent",
    "data_model",
    "new_envelope",
]


def _finite(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite decimal")
    return value


Money = Annotated[
    Decimal,
    AfterValidator(_finite),
    PlainSerializer(lambda v: format(v, "f"), return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^-?\d+(\.\d+)?$",
            "description": 'Decimal amount as a string, e.g. "12.50"',
        }
    ),
]
"""Money travels as a decimal string, never a float."""

Currency = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO-4217 code")]
Country = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO-3166 alpha-2 code")]


class InvalidEvent(ValueError):
    """A message that is not a valid envelope or whose data breaks its schema."""


class EventData(BaseModel):
    """Base of every event payload; `event_type` names the topic, `version` the schema.

    `subject` is what the envelope's subject and the Kafka key are: the order id for
    order events (every event of one order on one partition, in order), the supplier id
    for a supplier's own events.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)
    event_type: ClassVar[str]
    version: ClassVar[int] = 1
    source_service: ClassVar[str]

    @property
    def subject(self) -> str:
        raise NotImplementedError


class OrderEvent(EventData):
    """An event about one order: keyed by its id."""

    order_id: str = Field(min_length=1, max_length=64)

    @property
    def subject(self) -> str:
        return self.order_id


class PlacedLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    line_id: str
    sku: str
    quantity: int = Field(ge=1)
    unit_price: Money
    external_ids: list[str] | None = Field(
        None,
        description="a marketplace line sent without a SKU: its platform ids, most specific "
        "first (e.g. shopify:variant:<id>, shopify:product:<id>), by which an offer may map it",
    )


class OrderPlaced(OrderEvent):
    event_type: ClassVar[str] = "order-placed"
    source_service: ClassVar[str] = "order"
    channel: str
    external_id: str | None = None
    currency: Currency
    lines: list[PlacedLine] = Field(min_length=1)
    shipping_country: Country
    shipping_postal_code: str
    placed_at: AwareDatetime


class OrderCancelled(OrderEvent):
    event_type: ClassVar[str] = "order-cancelled"
    source_service: ClassVar[str] = "order"
    reason: str


class ConfirmedLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    line_id: str
    quantity: int = Field(ge=1)
    unit_cost: Money


class SupplierConfirmed(OrderEvent):
    event_type: ClassVar[str] = "supplier-confirmed"
    source_service: ClassVar[str] = "supplier"
    supplier_id: str
    supplier_order_ref: str
    lines: list[ConfirmedLine] = Field(min_length=1)
    currency: Currency
    ship_by: AwareDatetime


class RoutingFailureReason(StrEnum):
    NO_OFFER = "no_offer"
    OUT_OF_STOCK = "out_of_stock"
    ALL_SUPPLIERS_FAILED = "all_suppliers_failed"
    NEGATIVE_MARGIN = "negative_margin"
    UNMAPPED_SKU = "unmapped_sku"
    BAD_ADDRESS = "bad_address"


class OrderRoutingFailed(OrderEvent):
    event_type: ClassVar[str] = "order-routing-failed"
    source_service: ClassVar[str] = "supplier"
    line_ids: list[str] = Field(min_length=1)
    reason: RoutingFailureReason


class ShipmentDispatched(OrderEvent):
    event_type: ClassVar[str] = "shipment-dispatched"
    source_service: ClassVar[str] = "supplier"
    supplier_id: str
    carrier: str
    tracking_number: str
    line_ids: list[str] = Field(min_length=1)


class DelayReason(StrEnum):
    NO_TRACKING_BY_DEADLINE = "no_tracking_by_deadline"
    CARRIER_EXCEPTION = "carrier_exception"
    SUPPLIER_BACKORDER = "supplier_backorder"
    AT_RISK = "at_risk"
    NOT_ACCEPTED_IN_TIME = "not_accepted_in_time"
    LOST_IN_TRANSIT = "lost_in_transit"


class Severity(StrEnum):
    NORMAL = "normal"
    URGENT = "urgent"
    MAJOR = "major"


class ShipmentDelayed(OrderEvent):
    event_type: ClassVar[str] = "shipment-delayed"
    source_service: ClassVar[str] = "supplier"
    supplier_id: str
    reason: DelayReason
    severity: Severity
    expected_by: AwareDatetime | None = None


class ShipmentDelivered(OrderEvent):
    event_type: ClassVar[str] = "shipment-delivered"
    source_service: ClassVar[str] = "supplier"
    tracking_number: str
    delivered_at: AwareDatetime


class NotificationSent(OrderEvent):
    event_type: ClassVar[str] = "notification-sent"
    source_service: ClassVar[str] = "notify"
    kind: str
    channel: str
    recipient_kind: Literal["customer", "ops"]
    status: str


class HoldReason(StrEnum):
    ADDRESS_INVALID = "address_invalid"
    HIGH_VALUE = "high_value"
    MANUAL = "manual"


class OrderHeld(OrderEvent):
    """An order was put on hold: it is not routed until `order-released`.

    An order held at intake is not placed at all (no `order-placed`) until released; a
    hold after placement reaches the supplier service, which routes nothing more for it.
    """

    event_type: ClassVar[str] = "order-held"
    source_service: ClassVar[str] = "order"
    reason: HoldReason
    note: str = Field(default="", max_length=1000, description="no PII: the field and rule")
    held_at: AwareDatetime


class OrderReleased(OrderEvent):
    """Every hold of an order is lifted; it may be routed."""

    event_type: ClassVar[str] = "order-released"
    source_service: ClassVar[str] = "order"
    released_at: AwareDatetime


class WaitingReason(StrEnum):
    BREAKER_OPEN = "breaker_open"
    TIMEOUT = "timeout"
    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"


class OrderLinesWaiting(OrderEvent):
    """Lines whose candidate suppliers are all temporarily unavailable: `waiting_supplier`.

    They are routed again by themselves when a supplier recovers (`supplier-confirmed`
    or, if waiting cannot fix it after all, `order-routing-failed` follows).
    """

    event_type: ClassVar[str] = "order-lines-waiting"
    source_service: ClassVar[str] = "supplier"
    line_ids: list[str] = Field(min_length=1)
    reason: WaitingReason
    since: AwareDatetime


class SupplierAvailability(StrEnum):
    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"


class SupplierStatusChanged(EventData):
    """A supplier became unavailable (its circuit breaker opened) or available again.

    Keyed by supplier id. Notify alerts ops on `unavailable`; later work re-routes
    waiting lines on `available`.
    """

    event_type: ClassVar[str] = "supplier-status-changed"
    source_service: ClassVar[str] = "supplier"
    supplier_id: str = Field(min_length=1, max_length=64)
    status: SupplierAvailability
    reason: str = Field(default="", max_length=500, description="why, e.g. breaker_open")
    changed_at: AwareDatetime

    @property
    def subject(self) -> str:
        return self.supplier_id


class MarketplaceOperation(StrEnum):
    """What the order service writes back to a shop (DESIGN §6 "Marketplaces both ways")."""

    FULFIL = "fulfil"
    CANCEL = "cancel"
    REFUND = "refund"


class MarketplaceSyncFailed(OrderEvent):
    """A write-back to the order's shop gave up for good (attempts exhausted, or refused):
    the shop does not show the fulfilment, cancellation or refund. Ops are alerted."""

    event_type: ClassVar[str] = "marketplace-sync-failed"
    source_service: ClassVar[str] = "order"
    platform: Literal["shopify", "woocommerce"]
    shop: str = Field(max_length=255, description="the shop's domain (its id if it is gone)")
    operation: MarketplaceOperation
    external_id: str | None = Field(None, max_length=128, description="the shop's order id")
    tracking_number: str | None = Field(None, max_length=128, description="fulfil: which one")
    attempts: int = Field(ge=1)
    error: str = Field(max_length=500, description="why, as the platform said it; no PII")
    failed_at: AwareDatetime


# -- after-sales (DESIGN §6) ------------------------------------------------------------


class ReturnReason(StrEnum):
    """Why goods go back, or money does; `SUPPLIER_FAULTS` are charged back to the supplier."""

    DAMAGED_IN_TRANSIT = "damaged_in_transit"
    NOT_AS_DESCRIBED = "not_as_described"
    WRONG_ITEM = "wrong_item"
    NOT_RECEIVED = "not_received"
    CHANGED_MIND = "changed_mind"


SUPPLIER_FAULTS: frozenset[ReturnReason] = frozenset(
    {ReturnReason.DAMAGED_IN_TRANSIT, ReturnReason.NOT_AS_DESCRIBED, ReturnReason.WRONG_ITEM}
)
"""Reasons whose cost the supplier bears (a chargeback); the merchant bears the others."""

QUALITY_DEFECTS: frozenset[ReturnReason] = frozenset(
    {ReturnReason.DAMAGED_IN_TRANSIT, ReturnReason.NOT_AS_DESCRIBED}
)
"""Reasons that count against the supplier's quality score."""


class CostBearer(StrEnum):
    SUPPLIER = "supplier"
    MERCHANT = "merchant"


class ComplaintTier(StrEnum):
    """Response targets 24 h / 4 h / 1 h; every tier is resolved within 48 h."""

    NORMAL = "normal"
    URGENT = "urgent"
    MAJOR = "major"


class ReturnLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    line_id: str
    sku: str
    quantity: int = Field(ge=1)
    supplier_id: str | None = Field(None, description="who shipped the line, when known")


class ReturnRequested(OrderEvent):
    """A customer asked to send some shipped lines back (status `requested`)."""

    event_type: ClassVar[str] = "return-requested"
    source_service: ClassVar[str] = "order"
    return_id: str
    reason: ReturnReason
    lines: list[ReturnLine] = Field(min_length=1)
    requested_at: AwareDatetime


class ReturnAuthorized(OrderEvent):
    """The supplier granted an RMA: the customer is told where to send the goods."""

    event_type: ClassVar[str] = "return-authorized"
    source_service: ClassVar[str] = "order"
    return_id: str
    supplier_id: str
    reason: ReturnReason
    lines: list[ReturnLine] = Field(min_length=1)
    rma: str
    return_address: str = Field(description="the supplier's returns address (not customer PII)")
    authorized_at: AwareDatetime


class ReturnRejected(OrderEvent):
    """The return was refused (by ops, or the supplier refused the RMA); `note` says why."""

    event_type: ClassVar[str] = "return-rejected"
    source_service: ClassVar[str] = "order"
    return_id: str
    note: str = Field(default="", max_length=1000, description="why, shown to the customer")
    rejected_at: AwareDatetime


class ReturnReceived(OrderEvent):
    """The returned goods arrived back."""

    event_type: ClassVar[str] = "return-received"
    source_service: ClassVar[str] = "order"
    return_id: str
    received_at: AwareDatetime


class RefundLine(BaseModel):
    model_config = ConfigDict(frozen=True)
    line_id: str
    quantity: int = Field(ge=1)
    supplier_id: str | None = None


class RefundIssued(OrderEvent):
    """Money went back to the customer; never more than was paid across the order's refunds.

    `cost_bearer` follows the reason: `supplier` (a chargeback against `supplier_id`) for
    damaged, wrong or not-as-described goods, `merchant` otherwise.
    """

    event_type: ClassVar[str] = "refund-issued"
    source_service: ClassVar[str] = "order"
    refund_id: str
    return_id: str | None = None
    amount: Money
    currency: Currency
    reason: ReturnReason
    lines: list[RefundLine] = Field(default_factory=list)
    cost_bearer: CostBearer
    supplier_id: str | None = Field(None, description="charged back when cost_bearer=supplier")
    channel: str
    issued_at: AwareDatetime


class ComplaintFiled(OrderEvent):
    """A customer complaint; its summary stays in the order service (it may hold PII)."""

    event_type: ClassVar[str] = "complaint-filed"
    source_service: ClassVar[str] = "order"
    complaint_id: str
    tier: ComplaintTier
    respond_by: AwareDatetime
    resolve_by: AwareDatetime
    filed_at: AwareDatetime


class ComplaintResponded(OrderEvent):
    """The first response to a complaint (later ones are not events)."""

    event_type: ClassVar[str] = "complaint-responded"
    source_service: ClassVar[str] = "order"
    complaint_id: str
    tier: ComplaintTier
    by: str
    filed_at: AwareDatetime
    responded_at: AwareDatetime


class ComplaintResolved(OrderEvent):
    event_type: ClassVar[str] = "complaint-resolved"
    source_service: ClassVar[str] = "order"
    complaint_id: str
    tier: ComplaintTier
    by: str
    filed_at: AwareDatetime
    resolved_at: AwareDatetime


EVENT_TYPES: dict[str, type[EventData]] = {
    model.event_type: model
    for model in (
        OrderPlaced,
        OrderCancelled,
        SupplierConfirmed,
        OrderRoutingFailed,
        ShipmentDispatched,
        ShipmentDelayed,
        ShipmentDelivered,
        NotificationSent,
        SupplierStatusChanged,
        OrderHeld,
        OrderReleased,
        OrderLinesWaiting,
        ReturnRequested,
        ReturnAuthorized,
        ReturnRejected,
        ReturnReceived,
        RefundIssued,
        ComplaintFiled,
        ComplaintResponded,
        ComplaintResolved,
        MarketplaceSyncFailed,
    )
}
"""Every event type; the topic of each is named exactly after the type."""


def data_model(event_type: str) -> type[EventData]:
    try:
        return EVENT_TYPES[event_type]
    except KeyError:
        raise InvalidEvent(f"unknown event type {event_type!r}") from None


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Envelope(BaseModel):
    """A CloudEvents 1.0 structured-mode JSON envelope."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=64)
    type: str
    source: str
    subject: str = Field(
        description="The order id (the supplier id for supplier-status-changed); the Kafka key"
    )
    time: AwareDatetime
    datacontenttype: Literal["application/json"] = "application/json"
    dataschema: str = Field(description="<type>/v<version>")
    traceparent: str | None = None
    data: dict[str, Any]

    @property
    def key(self) -> bytes:
        return self.subject.encode()

    def payload(self) -> EventData:
        """Validate `data` against the model of this event's type."""
        model = data_model(self.type)
        if self.dataschema != f"{model.event_type}/v{model.version}":
            raise InvalidEvent(
                f"dataschema {self.dataschema!r} is not understood here "
                f"(expected {model.event_type}/v{model.version})"
            )
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            raise InvalidEvent(f"{self.type} data invalid: {exc}") from exc

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> Envelope:
        if raw is None:
            raise InvalidEvent("empty message")
        try:
            envelope = cls.model_validate_json(raw)
        except ValidationError as exc:
            raise InvalidEvent(f"not a valid CloudEvents envelope: {exc}") from exc
        data_model(envelope.type)
        return envelope


def new_envelope(
    data: EventData, *, traceparent: str | None = None, time: datetime | None = None
) -> Envelope:
    """Wrap an event payload in a fresh envelope with a unique id."""
    return Envelope(
        id=str(uuid.uuid4()),
        type=data.event_type,
        source=data.source_service,
        subject=data.subject,
        time=time or _utcnow(),
        dataschema=f"{data.event_type}/v{data.version}",
        traceparent=traceparent,
        data=data.model_dump(mode="json"),
    )
