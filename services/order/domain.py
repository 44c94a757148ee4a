"""Order aggregate: placing an order and the events it records. No I/O."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum

from shared.events import EventData, OrderPlaced, PlacedLine


class OrderError(Exception):
    """Root of the order service's domain errors."""


class Status(StrEnum):
    PLACED = "placed"
    ROUTED = "routed"
    CONFIRMED = "confirmed"
    SHIPPED = "shipped"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    NEEDS_ATTENTION = "needs_attention"


@dataclass(frozen=True)
class LineInput:
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass(frozen=True)
class PlaceOrder:
    channel: str
    external_id: str | None
    currency: str
    shipping_country: str
    shipping_postal_code: str
    lines: tuple[LineInput, ...]


@dataclass
class OrderLine:
    line_id: str
    sku: str
    quantity: int
    unit_price: Decimal


@dataclass
class Order:
    id: str
    channel: str
    external_id: str | None
    currency: str
    shipping_country: str
    shipping_postal_code: str
    lines: list[OrderLine]
    status: Status
    delayed: bool
    created_at: datetime
    events: list[EventData] = field(default_factory=list, repr=False)

    @classmethod
    def place(cls, cmd: PlaceOrder, now: datetime | None = None) -> Order:
        order_id = f"ord_{uuid.uuid4().hex}"
        created = now or datetime.now(UTC)
        lines = [
            OrderLine(f"{order_id}-{i}", line.sku, line.quantity, line.unit_price)
            for i, line in enumerate(cmd.lines, start=1)
        ]
        order = cls(
            id=order_id,
            channel=cmd.channel,
            external_id=cmd.external_id,
            currency=cmd.currency,
            shipping_country=cmd.shipping_country,
            shipping_postal_code=cmd.shipping_postal_code,
            lines=lines,
            status=Status.PLACED,
            delayed=False,
            created_at=created,
        )
        order.events.append(
            OrderPlaced(
                order_id=order_id,
                channel=cmd.channel,
                external_id=cmd.external_id,
                currency=cmd.currency,
                lines=[
                    PlacedLine(
                        line_id=ln.line_id,
                        sku=ln.sku,
                        quantity=ln.quantity,
                        unit_price=ln.unit_price,
                    )
                    for ln in lines
                ],
                shipping_country=cmd.shipping_country,
                shipping_postal_code=cmd.shipping_postal_code,
                placed_at=created,
            )
        )
        return order

    @property
    def total(self) -> Decimal:
        return sum((ln.unit_price * ln.quantity for ln in self.lines), Decimal(0))
