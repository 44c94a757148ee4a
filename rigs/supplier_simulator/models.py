"""Wire models of the simulator: the supplier API order request, control settings, views."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, HttpUrl, field_validator

SUPPLIER_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MAX_LATENCY_MS = 120_000.0
MAX_DELAY_S = 86_400.0

Rate = Annotated[float, Field(ge=0, le=1, description="Probability in [0, 1].")]


def _unique(skus: list[str]) -> list[str]:
    return list(dict.fromkeys(skus))


SkuList = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=128)]], AfterValidator(_unique)
]


class OrderLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    supplier_sku: str = Field(min_length=1, max_length=128)
    quantity: int = Field(gt=0, le=100_000)


Text = Annotated[str | None, Field(None, max_length=256)]
REQUIRED_SHIP_TO = ("name", "line1", "city", "postal_code", "country")
"""What a parcel cannot go without; an order missing any is refused with `bad_address`."""


class ShipTo(BaseModel):
    """Where the parcel goes. Accepted as sent (the supplier API's schema); completeness
    is judged afterwards so an incomplete address is a `bad_address` refusal, not a 422
    about the request's shape."""

    model_config = ConfigDict(extra="ignore")

    name: Text = None
    phone: Text = None
    email: Text = None
    line1: Text = None
    line2: Text = None
    city: Text = None
    region: Text = None
    postal_code: str | None = Field(None, max_length=32)
    country: str | None = Field(None, min_length=2, max_length=2)

    def missing(self) -> list[str]:
        return [name for name in REQUIRED_SHIP_TO if not (getattr(self, name) or "").strip()]


class PlaceOrderRequest(BaseModel):
    """`POST /{supplier_key}/orders`; unknown fields are ignored, as a real supplier would."""

    model_config = ConfigDict(extra="ignore")

    reference: str = Field(min_length=1, max_length=128)
    order_id: str = Field(min_length=1, max_length=128)
    lines: list[OrderLine] = Field(min_length=1, max_length=500)
    ship_to: ShipTo
    callback_url: HttpUrl


class ReturnRequest(BaseModel):
    """`POST /{supplier_key}/returns`: an RMA for goods the supplier shipped."""

    model_config = ConfigDict(extra="ignore")

    reference: str = Field(min_length=1, max_length=128)
    order_id: str = Field(min_length=1, max_length=128)
    supplier_order_ref: str | None = Field(None, max_length=128)
    reason: str = Field(min_length=1, max_length=64)
    lines: list[OrderLine] = Field(min_length=1, max_length=500)


class ReturnGranted(BaseModel):
    rma: str
    status: str = "granted"
    return_address: str


class ReturnView(BaseModel):
    idempotency_key: str
    reference: str
    order_id: str
    supplier_order_ref: str | None
    reason: str
    lines: list[OrderLine]
    status: str
    rma: str | None
    refused_reason: str | None
    received_at: str
    requests: int
    """How many times this return was asked for (retries answer the first decision)."""


class ReturnList(BaseModel):
    items: list[ReturnView]
    next_cursor: str | None = None


class PlaceOrderResponse(BaseModel):
    supplier_order_ref: str
    status: str = "received"


class CancelResponse(BaseModel):
    status: str = "cancelled"


class SupplierControl(BaseModel):
    """One simulated supplier's behaviour (DESIGN §5 plus the simulator's own knobs)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    api_key: str = Field(min_length=1, max_length=256)
    webhook_secret: str = Field(min_length=1, max_length=256)
    latency_ms: float = Field(0.0, ge=0, le=MAX_LATENCY_MS)
    fail_http_rate: Rate = 0.0
    reject_rate: Rate = 0.0
    backorder_rate: Rate = 0.0
    out_of_stock_skus: SkuList = Field(default_factory=list)
    never_ship: bool = False
    ship_after_s: float = Field(1.0, ge=0, le=MAX_DELAY_S)
    deliver_after_s: float | None = Field(2.0, ge=0, le=MAX_DELAY_S)
    seed: int | None = None
    callback_delay_s: float = Field(0.0, ge=0, le=MAX_DELAY_S)
    lose_callbacks: bool = False
    decision_delay_s: float | None = Field(None, ge=0, le=MAX_DELAY_S)
    """How long orders stay `received` before the decision (null: the process default)."""
    rma_refuse: bool = False
    """Refuse new return requests (`422 {"error": "refused", "reason"}`)."""
    rma_refuse_reason: str = Field("outside the 30-day return window", min_length=1, max_length=500)
    rma_latency_ms: float = Field(0.0, ge=0, le=MAX_LATENCY_MS)
    """Answer return requests this late (the RMA is granted, and kept, on arrival)."""
    return_address: str = Field(
        "Returns Dept., 88 Dock Road, Shenzhen 518000, CN", min_length=1, max_length=500
    )

    @classmethod
    def defaults(cls, supplier_key: str) -> SupplierControl:
        return cls(api_key=f"sim-key-{supplier_key}", webhook_secret=f"sim-secret-{supplier_key}")


class ControlPatch(BaseModel):
    """`PUT /_control/{supplier_key}`: only the fields sent change.

    `null` is accepted only where it means something (`deliver_after_s`: never deliver;
    `seed`: back to the process seed); anywhere else it is a 422 naming the field.
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    api_key: str | None = Field(None, min_length=1, max_length=256)
    webhook_secret: str | None = Field(None, min_length=1, max_length=256)
    latency_ms: float | None = Field(None, ge=0, le=MAX_LATENCY_MS)
    fail_http_rate: Rate | None = None
    reject_rate: Rate | None = None
    backorder_rate: Rate | None = None
    out_of_stock_skus: SkuList | None = None
    never_ship: bool | None = None
    ship_after_s: float | None = Field(None, ge=0, le=MAX_DELAY_S)
    deliver_after_s: float | None = Field(None, ge=0, le=MAX_DELAY_S)
    seed: int | None = None
    callback_delay_s: float | None = Field(None, ge=0, le=MAX_DELAY_S)
    lose_callbacks: bool | None = None
    decision_delay_s: float | None = Field(None, ge=0, le=MAX_DELAY_S)
    rma_refuse: bool | None = None
    rma_refuse_reason: str | None = Field(None, min_length=1, max_length=500)
    rma_latency_ms: float | None = Field(None, ge=0, le=MAX_LATENCY_MS)
    return_address: str | None = Field(None, min_length=1, max_length=500)

    @field_validator(
        "api_key",
        "webhook_secret",
        "latency_ms",
        "fail_http_rate",
        "reject_rate",
        "backorder_rate",
        "out_of_stock_skus",
        "never_ship",
        "ship_after_s",
        "callback_delay_s",
        "lose_callbacks",
        "rma_refuse",
        "rma_refuse_reason",
        "rma_latency_ms",
        "return_address",
        mode="before",
    )
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may not be null")
        return value

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class ControlView(SupplierControl):
    supplier_key: str


class OrderEvent(BaseModel):
    """One outbound delivery (supplier callback or tracking update) and how it went."""

    kind: str
    type: str
    delivery_id: str
    url: str
    payload: dict[str, Any]
    status: str
    attempts: int
    http_status: int | None
    error: str | None
    occurred_at: str
    completed_at: str


class OrderView(BaseModel):
    supplier_order_ref: str
    idempotency_key: str
    reference: str
    order_id: str
    lines: list[OrderLine]
    ship_to: ShipTo
    callback_url: str
    state: str
    received_at: str
    carrier: str | None
    tracking_number: str | None
    events: list[OrderEvent]


class OrderStatus(BaseModel):
    """`GET /{supplier_key}/orders/{ref}`: what became of an order, for callers that missed
    (or never got) its callbacks."""

    supplier_order_ref: str
    reference: str
    status: str
    reason: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None


class OrderList(BaseModel):
    items: list[OrderView]
    next_cursor: str | None = None


class RequestLog(BaseModel):
    """Arrival times (RFC 3339 UTC) of a supplier's API requests, oldest first."""

    items: list[str]


class SupplierStats(BaseModel):
    """`GET /_control/{key}/stats`: a supplier's orders and deliveries, counted."""

    orders: int
    states: dict[str, int]
    deliveries: dict[str, dict[str, int]]
    """`{"callback:dispatched": {"sent": 398, "failed": 2}, ...}` (kind:type -> outcome)."""
    given_up: int
    """Deliveries (callbacks and tracking updates) that failed after every attempt."""
