"""Order aggregate: placing, cancelling, and following the supply chain's events. No I/O.

Status is derived from the lines, so events applied in any order give the same answer:
each line only moves forward (pending < confirmed < shipped < delivered), and

- `cancelled` and `needs_attention` (a line could not be routed) are exits;
- `on_hold` while any hold (`address_invalid`, `high_value`, `manual`) stands: the order
  is not routed (an order held at intake is not even placed: `order-held` instead of
  `order-placed`, which follows its release);
- `delivered` / `shipped` / `confirmed` when every line has reached that stage;
- `routed` when some lines are confirmed and the rest are still being routed;
- `placed` before any supplier confirmed anything.

`delayed` is set by a delay for lines not yet shipped and cleared when those ship.
A line whose suppliers are all temporarily unavailable is `waiting` (shown as
`waiting_supplier`) until a supplier confirms it or routing fails; the order's status is
not changed by waiting (still `placed` or `routed`).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any

from services.order.errors import (
    AddressFixRequired,
    CannotCancel,
    NotOnHold,
    OrderClosed,
    RecipientRequired,
    SupplierHasOrder,
)
from shared.events import (
    EventData,
    HoldReason,
    OrderCancelled,
    OrderHeld,
    OrderLinesWaiting,
    OrderPlaced,
    OrderReleased,
    OrderRoutingFailed,
    PlacedLine,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)


class Status(StrEnum):
    PLACED = "placed"
    ROUTED = "routed"
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs_attention"
    ON_HOLD = "on_hold"


class LineStage(IntEnum):
    PENDING = 0
    CONFIRMED = 1
    SHIPPED = 2
    DELIVERED = 3


@dataclass(frozen=True)
class Contact:
    name: str
    email: str
    phone: str | None = None
    locale: str | None = None


@dataclass(frozen=True)
class Address:
    line1: str
    city: str
    postal_code: str
    country: str
    line2: str | None = None
    region: str | None = None


@dataclass(frozen=True)
class LineInput:
    sku: str
    quantity: int
    unit_price: Decimal
    external_ids: tuple[str, ...] | None = None
    """A marketplace line sent without a SKU: its platform ids, by which an offer may map it."""


@dataclass(frozen=True)
class PlaceOrder:
    channel: str
    external_id: str | None
    currency: str
    customer: Contact
    shipping: Address
    lines: tuple[LineInput, ...]
    shop_id: str | None = None
    """The registered shop it came from (its `external_id` is that shop's own order number);
    None for the storefront and the default (env-secret) shop."""


@dataclass
class OrderLine:
    line_id: str
    sku: str
    quantity: int
    unit_price: Decimal
    stage: LineStage = LineStage.PENDING
    supplier_id: str | None = None
    unit_cost: Decimal | None = None
    routing_failed: str | None = None
    waiting: str | None = None
    external_ids: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Hold:
    """Why an order is not routed, since when; `note` names the field and rule (no PII)."""

    reason: HoldReason
    note: str
    since: datetime


@dataclass(frozen=True)
class Note:
    """A change with no event of its own (a hold lifted, an address changed), for the timeline."""

    type: str
    data: dict[str, Any]
    at: datetime


@dataclass
class Allocation:
    supplier_id: str
    supplier_order_ref: str
    line_ids: list[str]
    currency: str
    ship_by: datetime
    confirmed_at: datetime


@dataclass
class Shipment:
    supplier_id: str
    carrier: str
    tracking_number: str
    line_ids: list[str]
    dispatched_at: datetime
    delivered_at: datetime | None = None


@dataclass
class Order:
    id: str
    channel: str
    external_id: str | None
    currency: str
    customer: Contact
    shipping: Address
    lines: list[OrderLine]
    created_at: datetime
    cancelled_at: datetime | None = None
    cancel_reason: str | None = None
    delayed: bool = False
    delayed_suppliers: set[str] = field(default_factory=set)
    early_deliveries: dict[str, datetime] = field(default_factory=dict)
    released_suppliers: set[str] = field(default_factory=set)
    allocations: list[Allocation] = field(default_factory=list)
    shipments: list[Shipment] = field(default_factory=list)
    redacted: bool = False
    holds: list[Hold] = field(default_factory=list)
    placed: bool = True
    """Whether `order-placed` was emitted (not yet for an order held since intake)."""
    refunded_total: Decimal = Decimal(0)
    """Money refunded so far (kept by `services.order.aftersales`)."""
    shop_id: str | None = None
    """The registered shop whose order number `external_id` is (None: storefront, default shop)."""
    events: list[EventData] = field(default_factory=list, repr=False)
    notes: list[Note] = field(default_factory=list, repr=False)

    # -- creation ---------------------------------------------------------------------
    @classmethod
    def place(
        cls,
        cmd: PlaceOrder,
        now: datetime | None = None,
        *,
        holds: Sequence[tuple[HoldReason, str]] = (),
    ) -> Order:
        """A new order; with `holds` it starts `on_hold` and emits `order-held`, not placed."""
        order_id = f"ord_{uuid.uuid4().hex}"
        created = now or datetime.now(UTC)
        lines = [
            OrderLine(
                f"{order_id}-{i}", ln.sku, ln.quantity, ln.unit_price, external_ids=ln.external_ids
            )
            for i, ln in enumerate(cmd.lines, start=1)
        ]
        order = cls(
            id=order_id,
            channel=cmd.channel,
            external_id=cmd.external_id,
            currency=cmd.currency,
            customer=cmd.customer,
            shipping=cmd.shipping,
            lines=lines,
            created_at=created,
            placed=not holds,
            shop_id=cmd.shop_id,
        )
        for reason, note in holds:
            order._hold(reason, note, created)
        if order.placed:
            order.events.append(order._placed_event(created))
        return order

    def _placed_event(self, at: datetime) -> OrderPlaced:
        return OrderPlaced(
            order_id=self.id,
            channel=self.channel,
            external_id=self.external_id,
            currency=self.currency,
            lines=[
                PlacedLine(
                    line_id=ln.line_id,
                    sku=ln.sku,
                    quantity=ln.quantity,
                    unit_price=ln.unit_price,
                    external_ids=None if ln.external_ids is None else list(ln.external_ids),
                )
                for ln in self.lines
            ],
            shipping_country=self.shipping.country,
            shipping_postal_code=self.shipping.postal_code,
            placed_at=at,
        )

    # -- derived state ----------------------------------------------------------------
    @property
    def status(self) -> Status:
        if self.cancelled_at is not None:
            return Status.CANCELLED
        if self.holds:
            return Status.ON_HOLD
        if any(ln.routing_failed for ln in self.lines):
            return Status.NEEDS_ATTENTION
        lowest = min(ln.stage for ln in self.lines)
        if lowest >= LineStage.DELIVERED:
            return Status.DELIVERED
        if lowest >= LineStage.SHIPPED:
            return Status.SHIPPED
        if lowest >= LineStage.CONFIRMED:
            return Status.CONFIRMED
        if any(ln.stage > LineStage.PENDING for ln in self.lines):
            return Status.ROUTED
        return Status.PLACED

    @property
    def total(self) -> Decimal:
        return sum((ln.unit_price * ln.quantity for ln in self.lines), Decimal(0))

    @property
    def has_shipped(self) -> bool:
        return any(ln.stage >= LineStage.SHIPPED for ln in self.lines)

    @property
    def supplier_has_it(self) -> bool:
        """A supplier confirmed (or shipped) a line: holding it can no longer stop it."""
        return bool(self.allocations or self.shipments) or any(
            ln.stage > LineStage.PENDING for ln in self.lines
        )

    def _lines(self, line_ids: list[str]) -> list[OrderLine]:
        wanted = set(line_ids)
        return [ln for ln in self.lines if ln.line_id in wanted]

    def _advance(self, line_ids: list[str], stage: LineStage) -> None:
        for line in self._lines(line_ids):
            line.stage = max(line.stage, stage)

    # -- commands ---------------------------------------------------------------------
    def cancel(self, reason: str, now: datetime | None = None) -> bool:
        """Cancel; False if it already was (nothing new happens). Raises once shipped."""
        if self.cancelled_at is not None:
            return False
        if self.has_shipped:
            raise CannotCancel(f"order {self.id} has shipped and can no longer be cancelled")
        self.cancelled_at = now or datetime.now(UTC)
        self.cancel_reason = reason
        self.events.append(OrderCancelled(order_id=self.id, reason=reason))
        return True

    def hold(self, note: str, now: datetime | None = None) -> bool:
        """Hold by hand (`manual`); False if a manual hold stands already (nothing new).

        `OrderClosed` once cancelled, `SupplierHasOrder` once a supplier confirmed a line.
        """
        self._still_ours("held")
        if any(h.reason is HoldReason.MANUAL for h in self.holds):
            return False
        self._hold(HoldReason.MANUAL, note, now or datetime.now(UTC))
        return True

    def release(self, now: datetime | None = None) -> None:
        """Lift the `manual` and `high_value` holds; released when no hold remains.

        `NotOnHold` without a hold; `AddressFixRequired` when only `address_invalid`
        stands (a valid shipping address lifts that one).
        """
        if self.cancelled_at is not None or not self.holds:
            raise NotOnHold(f"order {self.id} is not on hold")
        liftable = {HoldReason.MANUAL, HoldReason.HIGH_VALUE}
        if not any(h.reason in liftable for h in self.holds):
            raise AddressFixRequired(
                f"order {self.id} is held for its address: send a valid shipping address"
            )
        self._lift(liftable, now or datetime.now(UTC), why="released by merchant")

    def change_address(
        self,
        address: Address,
        phone: str | None,
        now: datetime | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """Ship to `address` (a valid one: checked before), to `name` when given; lifts
        `address_invalid` (`RecipientRequired` while the order has no recipient name)."""
        self._still_ours("re-addressed")
        if not (name or self.customer.name):
            raise RecipientRequired(f"order {self.id} has no recipient: send the name too")
        at = now or datetime.now(UTC)
        self.shipping = address
        if phone is not None:
            self.customer = replace(self.customer, phone=phone)
        if name is not None:
            self.customer = replace(self.customer, name=name)
        self.notes.append(
            Note(
                "shipping-address-changed",
                {
                    "city": address.city,
                    "region": address.region,
                    "postal_code": address.postal_code,
                    "country": address.country,
                    "phone_changed": phone is not None,
                    "name_changed": name is not None,
                },
                at,
            )
        )
        self._lift({HoldReason.ADDRESS_INVALID}, at, why="the shipping address was corrected")

    def _still_ours(self, action: str) -> None:
        if self.cancelled_at is not None:
            raise OrderClosed(f"order {self.id} is cancelled and can no longer be {action}")
        if self.supplier_has_it:
            raise SupplierHasOrder(
                f"a supplier already has order {self.id}: it can no longer be {action}"
            )

    def _hold(self, reason: HoldReason, note: str, at: datetime) -> None:
        self.holds.append(Hold(reason, note, at))
        self.events.append(OrderHeld(order_id=self.id, reason=reason, note=note, held_at=at))

    def _lift(self, reasons: set[HoldReason], at: datetime, *, why: str) -> None:
        """Lift holds of these reasons; released (and placed if need be) when none remains."""
        lifted = [h.reason.value for h in self.holds if h.reason in reasons]
        if not lifted:
            return
        self.holds = [h for h in self.holds if h.reason not in reasons]
        if self.holds:
            self.notes.append(Note("hold-lifted", {"reasons": lifted, "why": why}, at))
            return
        self.events.append(OrderReleased(order_id=self.id, released_at=at))
        if not self.placed:
            self.placed = True
            self.events.append(self._placed_event(at))

    # -- supply-chain events; each returns a note for the timeline when it was unusual --
    def apply(self, event: EventData, at: datetime) -> str | None:
        if isinstance(event, SupplierConfirmed):
            return self._confirmed(event, at)
        if isinstance(event, OrderRoutingFailed):
            for line in self._lines(event.line_ids):
                if line.stage == LineStage.PENDING:
                    line.routing_failed = event.reason.value
                    line.waiting = None
            return self._after_cancel_note()
        if isinstance(event, OrderLinesWaiting):
            for line in self._lines(event.line_ids):
                if line.stage == LineStage.PENDING and not line.routing_failed:
                    line.waiting = event.reason.value
            return self._after_cancel_note()
        if isinstance(event, ShipmentDispatched):
            return self._dispatched(event, at)
        if isinstance(event, ShipmentDelayed):
            return self._delayed(event)
        if isinstance(event, ShipmentDelivered):
            return self._delivered(event)
        return f"ignored: {type(event).__name__} does not concern the order's state"

    def _after_cancel_note(self) -> str | None:
        return "recorded after the order was cancelled" if self.cancelled_at else None

    def _confirmed(self, event: SupplierConfirmed, at: datetime) -> str | None:
        line_ids = [ln.line_id for ln in event.lines]
        unknown = set(line_ids) - {ln.line_id for ln in self.lines}
        if unknown:
            return f"ignored: unknown lines {sorted(unknown)}"
        if not any(a.supplier_order_ref == event.supplier_order_ref for a in self.allocations):
            self.allocations.append(
                Allocation(
                    event.supplier_id,
                    event.supplier_order_ref,
                    line_ids,
                    event.currency,
                    event.ship_by,
                    at,
                )
            )
        costs = {ln.line_id: ln.unit_cost for ln in event.lines}
        for line in self._lines(line_ids):
            if line.supplier_id not in (None, event.supplier_id):
                self.released_suppliers.add(line.supplier_id)  # failed over
            line.supplier_id = event.supplier_id
            line.unit_cost = costs[line.line_id]
            line.routing_failed = None  # a later supplier took the line over
            line.waiting = None
        self._advance(line_ids, LineStage.CONFIRMED)
        self._refresh_delay()
        if self.holds and self.cancelled_at is None:
            self._lift(set(HoldReason), at, why="the supplier already had it")
            return "the supplier already had it: the hold is lifted"
        return self._after_cancel_note()

    def _dispatched(self, event: ShipmentDispatched, at: datetime) -> str | None:
        note = None
        if any(ln.stage < LineStage.CONFIRMED for ln in self._lines(event.line_ids)):
            note = "dispatch arrived before the supplier's confirmation"
        if not any(s.tracking_number == event.tracking_number for s in self.shipments):
            self.shipments.append(
                Shipment(
                    event.supplier_id, event.carrier, event.tracking_number, event.line_ids, at
                )
            )
        for line in self._lines(event.line_ids):
            line.supplier_id = line.supplier_id or event.supplier_id
        self._advance(event.line_ids, LineStage.SHIPPED)
        delivered_at = self.early_deliveries.pop(event.tracking_number, None)
        if delivered_at is not None:
            self._mark_delivered(event.tracking_number, delivered_at)
        self._refresh_delay()
        return note or self._after_cancel_note()

    def _delayed(self, event: ShipmentDelayed) -> str | None:
        if event.supplier_id in self.released_suppliers:
            return "ignored: the supplier's lines have moved to another supplier"
        owned = [ln for ln in self.lines if ln.supplier_id == event.supplier_id]
        if owned and all(ln.stage >= LineStage.SHIPPED for ln in owned):
            return "ignored: the supplier's lines have already shipped"
        self.delayed_suppliers.add(event.supplier_id)
        self._refresh_delay()
        return self._after_cancel_note()

    def _delivered(self, event: ShipmentDelivered) -> str | None:
        if not self._mark_delivered(event.tracking_number, event.delivered_at):
            self.early_deliveries[event.tracking_number] = event.delivered_at
            return "delivery arrived before its dispatch; applied when the dispatch arrives"
        self._refresh_delay()
        return self._after_cancel_note()

    def _mark_delivered(self, tracking_number: str, delivered_at: datetime) -> bool:
        shipment = next((s for s in self.shipments if s.tracking_number == tracking_number), None)
        if shipment is None:
            return False
        shipment.delivered_at = shipment.delivered_at or delivered_at
        self._advance(shipment.line_ids, LineStage.DELIVERED)
        return True

    def _refresh_delay(self) -> None:
        holders = {ln.supplier_id for ln in self.lines}
        still = {
            supplier
            for supplier in self.delayed_suppliers - self.released_suppliers
            if any(ln.supplier_id == supplier and ln.stage < LineStage.SHIPPED for ln in self.lines)
            or supplier not in holders  # delay consumed before the confirmation: keep it
        }
        self.delayed_suppliers = still
        self.delayed = bool(still)
