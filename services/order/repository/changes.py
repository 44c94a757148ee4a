"""What `OrderRepository.save` writes: the aggregate's rows compared with a snapshot taken
when it was loaded, so an event that moves two lines writes two lines. No queries here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.order.domain import Order, OrderLine
from services.order.repository.rows import hold_values, state_values

ORDER_COLUMNS = ("status", "delayed", "state", "holds", "cancelled_at", "cancel_reason")
"""The `customer_order` columns `order_columns` gives, all of them every time."""


def order_columns(order: Order) -> dict[str, Any]:
    """The `customer_order` columns an event or command may change (never PII)."""
    return {
        "status": order.status.value,
        "delayed": order.delayed,
        "state": state_values(order),
        "holds": hold_values(order),
        "cancelled_at": order.cancelled_at,
        "cancel_reason": order.cancel_reason,
    }


def line_columns(ln: OrderLine) -> dict[str, Any]:
    """The `order_line` columns that move with the supply chain (keyed `b_id` for the
    executemany `UPDATE ... WHERE id = :b_id`)."""
    return {
        "b_id": ln.line_id,
        "stage": int(ln.stage),
        "supplier_id": ln.supplier_id,
        "unit_cost": ln.unit_cost,
        "routing_failed": ln.routing_failed,
        "waiting": ln.waiting,
    }


def _allocations(order: Order) -> dict[str, dict[str, Any]]:
    return {
        a.supplier_order_ref: {
            "order_id": order.id,
            "supplier_id": a.supplier_id,
            "supplier_order_ref": a.supplier_order_ref,
            "line_ids": a.line_ids,
            "currency": a.currency,
            "ship_by": a.ship_by,
            "confirmed_at": a.confirmed_at,
        }
        for a in order.allocations
    }


def _shipments(order: Order) -> dict[str, dict[str, Any]]:
    return {
        s.tracking_number: {
            "order_id": order.id,
            "supplier_id": s.supplier_id,
            "carrier": s.carrier,
            "tracking_number": s.tracking_number,
            "line_ids": list(s.line_ids),
            "dispatched_at": s.dispatched_at,
            "delivered_at": s.delivered_at,
        }
        for s in order.shipments
    }


@dataclass(frozen=True)
class Loaded:
    """An order's rows as they were loaded (or last saved) in this transaction."""

    order: dict[str, Any]
    lines: dict[str, dict[str, Any]]
    allocations: frozenset[str]
    shipments: dict[str, datetime | None]
    """tracking number -> delivered_at (the one column a shipment changes)."""
    pii: bool = True
    """False: loaded without its PII (name, e-mail, phone and street are blank)."""

    @classmethod
    def of(cls, order: Order, *, pii: bool = True) -> Loaded:
        return cls(
            order=order_columns(order),
            lines={ln.line_id: line_columns(ln) for ln in order.lines},
            allocations=frozenset(a.supplier_order_ref for a in order.allocations),
            shipments={s.tracking_number: s.delivered_at for s in order.shipments},
            pii=pii,
        )


@dataclass
class Changes:
    """The writes that bring the rows up to the aggregate; empty parts are not written."""

    order: dict[str, Any] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    allocations: list[dict[str, Any]] = field(default_factory=list)
    shipments: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def since(cls, order: Order, before: Loaded | None) -> Changes:
        """What changed since `before` (None: an unknown past, so everything)."""
        columns = order_columns(order)
        lines = [line_columns(ln) for ln in order.lines]
        allocations = _allocations(order)
        shipments = _shipments(order)
        if before is None:
            return cls(columns, lines, list(allocations.values()), list(shipments.values()))
        return cls(
            order=None if columns == before.order else columns,
            lines=[ln for ln in lines if before.lines.get(ln["b_id"]) != ln],
            allocations=[a for ref, a in allocations.items() if ref not in before.allocations],
            shipments=[
                s
                for tracking, s in shipments.items()
                if tracking not in before.shipments
                or before.shipments[tracking] != s["delivered_at"]
            ],
        )
