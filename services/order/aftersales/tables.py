"""After-sales tables in the order database: returns, refunds, complaints (texts sealed)."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Index, Numeric, String, Table, Text

from services.order.tables import metadata

order_return = Table(
    "order_return",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("supplier_id", String(64), nullable=True),
    Column("reason", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("lines", JSON, nullable=False),  # [{line_id, sku, quantity}]
    Column("note", Text, nullable=True),  # sealed
    Column("rma", String(128), nullable=True),
    Column("return_address", String(500), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("authorized_at", DateTime(timezone=True), nullable=True),
    Column("rejected_at", DateTime(timezone=True), nullable=True),
    Column("received_at", DateTime(timezone=True), nullable=True),
    Column("refunded_at", DateTime(timezone=True), nullable=True),
    Column("refund_id", String(64), nullable=True),
    Index("ix_order_return_created", "created_at", "id"),
    Index("ix_order_return_status_created", "status", "created_at"),
)

refund = Table(
    "refund",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("return_id", String(64), nullable=True, unique=True),
    Column("amount", Numeric(18, 4), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("lines", JSON, nullable=False),  # [{line_id, quantity, supplier_id}]
    Column("cost_bearer", String(16), nullable=False),
    Column("supplier_id", String(64), nullable=True),
    Column("channel", String(32), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

complaint = Table(
    "complaint",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("tier", String(16), nullable=False),
    Column("status", String(16), nullable=False),  # open | responded | resolved
    Column("summary", Text, nullable=False),  # sealed
    Column("responses", JSON, nullable=False),  # [{by, message (sealed), at}]
    Column("filed_at", DateTime(timezone=True), nullable=False),
    Column("respond_by", DateTime(timezone=True), nullable=False),
    Column("resolve_by", DateTime(timezone=True), nullable=False),
    Column("responded_at", DateTime(timezone=True), nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("resolved_by", String(200), nullable=True),
    Column("resolution", Text, nullable=True),  # sealed
    Index("ix_complaint_filed", "filed_at", "id"),
    Index("ix_complaint_status_filed", "status", "filed_at"),
)
