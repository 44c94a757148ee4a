"""Supplier service tables: suppliers, offers, routing requests, supplier orders, allocations."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from shared.db import Id, new_metadata

metadata = new_metadata()

supplier = Table(
    "supplier",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("supplier_key", String(64), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("api_base_url", String(500), nullable=False),
    Column("credentials", Text, nullable=True),  # encrypted JSON: api_key, webhook_secret
    Column("priority", Integer, nullable=False, default=5),
    Column("ship_sla_hours", Float, nullable=False, default=48.0),
    Column("active", Boolean, nullable=False, default=True),
    Column("rate_limit_per_s", Float, nullable=True),
    Column("decided", Integer, nullable=False, default=0),
    Column("accepted", Integer, nullable=False, default=0),
    Column("shipped", Integer, nullable=False, default=0),
    Column("shipped_on_time", Integer, nullable=False, default=0),
    Column("exceptions", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

offer = Table(
    "offer",
    metadata,
    Column("supplier_id", String(64), ForeignKey("supplier.id"), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("supplier_sku", String(64), nullable=False),
    Column("unit_cost", Numeric(18, 4), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("stock", Integer, nullable=False),
    Column("lead_time_hours", Float, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_offer_sku", "sku"),
)

offer_external_id = Table(
    "offer_external_id",
    metadata,
    Column("supplier_id", String(64), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("external_id", String(128), primary_key=True),
    Index("ix_offer_external_id_external_id", "external_id"),
)
"""Marketplace ids an offer maps (`shopify:variant:<id>`): routes lines sent without a SKU."""

routing_request = Table(
    "routing_request",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("currency", String(3), nullable=False),
    Column("lines", JSON, nullable=False),  # [{line_id, sku, quantity, unit_price}]
    Column("ship_country", String(2), nullable=False),
    Column("ship_postal_code", String(32), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
)

supplier_order = Table(
    "supplier_order",
    metadata,
    Column("id", String(64), primary_key=True),  # also the idempotency key at the supplier
    Column("order_id", String(64), nullable=False, index=True),
    Column("supplier_id", String(64), ForeignKey("supplier.id"), nullable=False),
    Column("state", String(24), nullable=False),
    Column("supplier_order_ref", String(128), nullable=True),
    Column("failure", String(200), nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    Column("confirmed_at", DateTime(timezone=True), nullable=True),
    Column("ship_by", DateTime(timezone=True), nullable=True),
    Column("sla_hours", Float, nullable=True),
    Column("at_risk_sent", Boolean, nullable=False, default=False),
    Column("deadline_sent", Boolean, nullable=False, default=False),
    Column("major_sent", Boolean, nullable=False, default=False),
    Column("carrier", String(64), nullable=True),
    Column("tracking_number", String(128), nullable=True, index=True),
    Column("dispatched_at", DateTime(timezone=True), nullable=True),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    # when to ask the supplier for the order's status if no decision has been called back
    Column("next_check_at", DateTime(timezone=True), nullable=True),
    Index("ix_supplier_order_state", "state"),
    Index("ix_supplier_order_sla", "state", "ship_by"),
    Index("ix_supplier_order_check", "state", "next_check_at"),
)

allocation = Table(
    "allocation",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "supplier_order_id", String(64), ForeignKey("supplier_order.id"), nullable=False, index=True
    ),
    Column("order_id", String(64), nullable=False, index=True),
    Column("line_id", String(80), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("supplier_sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_cost", Numeric(18, 4), nullable=False),
    Column("unit_price", Numeric(18, 4), nullable=False),
    Column("currency", String(3), nullable=False),
    UniqueConstraint("supplier_order_id", "line_id"),
)

order_cancellation = Table(
    "order_cancellation",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("reason", String(500), nullable=False),
    Column("cancelled_at", DateTime(timezone=True), nullable=False),
)

callback_delivery = Table(
    "callback_delivery",
    metadata,
    Column("source", String(64), primary_key=True),
    Column("delivery_id", String(128), primary_key=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
)

supplier_tally = Table(
    "supplier_tally",
    metadata,
    # counter increments of one transaction, appended (no hot-row lock on `supplier`);
    # folded into the supplier's counters by `SupplierUnitOfWork.fold_tallies`
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("supplier_id", String(64), nullable=False),
    Column("decided", Integer, nullable=False, default=0),
    Column("accepted", Integer, nullable=False, default=0),
    Column("shipped", Integer, nullable=False, default=0),
    Column("shipped_on_time", Integer, nullable=False, default=0),
    Column("exceptions", Integer, nullable=False, default=0),
)

waiting_line = Table(
    "waiting_line",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("line_id", String(80), primary_key=True),
    Column("reason", String(24), nullable=False),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("retry_at", DateTime(timezone=True), nullable=True),  # null: being routed again
    Column("attempts", Integer, nullable=False, default=0),
    Index("ix_waiting_line_retry", "retry_at"),
)
"""Lines every candidate supplier of which is temporarily unavailable (`waiting_supplier`)."""

clock_alarm = Table(
    "clock_alarm",
    metadata,
    Column("subject", String(64), primary_key=True),  # an order id or a supplier order id
    Column("kind", String(32), primary_key=True),  # not_accepted_in_time | lost_in_transit
    Column("fired_at", DateTime(timezone=True), nullable=False),
)
"""Clock alarms already raised: each fires once per subject."""

tracking_movement = Table(
    "tracking_movement",
    metadata,
    Column("tracking_number", String(128), primary_key=True),
    Column("moved_at", DateTime(timezone=True), nullable=False),
)
"""When a parcel last moved (a tracking update after dispatch): silence means lost."""

order_hold = Table(
    "order_hold",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("held_at", DateTime(timezone=True), nullable=True),
    Column("released_at", DateTime(timezone=True), nullable=True),
    Column("parked", JSON, nullable=False),  # line ids not routed because of the hold
)
"""Holds, remembered before the order arrives too: held while `held_at > released_at`
(the newest of each wins, so the two topics may be consumed in any order)."""

supplier_mark = Table(
    "supplier_mark",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("supplier_id", String(64), nullable=False),
    Column("kind", String(32), nullable=False),  # missed_deadline | lost_in_transit
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_supplier_mark_supplier", "supplier_id", "at"),
)
"""Misses counted against a supplier's reliability, decaying with age."""

supplier_return = Table(
    "supplier_return",
    metadata,
    Column("return_id", String(64), primary_key=True),
    Column("supplier_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("units", Integer, nullable=False),
    Column("defect", Boolean, nullable=False),  # the reason is a quality defect
    Column("authorized_at", DateTime(timezone=True), nullable=False),
    Index("ix_supplier_return_supplier", "supplier_id", "defect"),
)
"""Authorised returns by the supplier that shipped the lines, each return once
(`return-authorized`); quality defects count against the supplier's quality score."""

supplier_chargeback = Table(
    "supplier_chargeback",
    metadata,
    Column("refund_id", String(64), primary_key=True),
    Column("supplier_id", String(64), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("return_id", String(64), nullable=True),
    Column("amount", Numeric(18, 4), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("ix_supplier_chargeback_supplier", "supplier_id", "issued_at"),
)
"""Refunds the supplier bears (`refund-issued` with `cost_bearer=supplier`), one per refund."""
