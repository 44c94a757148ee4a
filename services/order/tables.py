"""Order service tables (one database per service; PII columns hold ciphertext)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
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

customer_order = Table(
    "customer_order",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("channel", String(32), nullable=False),
    Column("external_id", String(128), nullable=True),
    # the registered shop whose order number external_id is; "" for the storefront and the
    # default (env-secret) shop, so the unique key below also holds for them (NULLs differ)
    Column("shop_id", String(64), nullable=False, default="", server_default=""),
    Column("currency", String(3), nullable=False),
    Column("status", String(32), nullable=False),
    Column("delayed", Boolean, nullable=False, default=False),
    Column("customer_name", Text, nullable=True),  # encrypted
    Column("email", Text, nullable=True),  # encrypted
    Column("email_index", String(64), nullable=True, index=True),  # blind index
    Column("phone", Text, nullable=True),  # encrypted
    Column("locale", String(16), nullable=True),
    Column("ship_line1", Text, nullable=True),  # encrypted
    Column("ship_line2", Text, nullable=True),  # encrypted
    Column("ship_city", String(200), nullable=False),
    Column("ship_region", String(100), nullable=True),
    Column("ship_postal_code", String(32), nullable=False),
    Column("ship_country", String(2), nullable=False),
    Column("state", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("cancelled_at", DateTime(timezone=True), nullable=True),
    Column("cancel_reason", String(500), nullable=True),
    Column("redacted_at", DateTime(timezone=True), nullable=True),
    Column("holds", JSON, nullable=True),  # [{reason, note, since}]: no PII
    Column("refunded_total", Numeric(18, 4), nullable=False, default=0, server_default="0"),
    UniqueConstraint("channel", "shop_id", "external_id"),
    Index("ix_customer_order_created", "created_at", "id"),
    Index("ix_customer_order_status_created", "status", "created_at"),
)

order_line = Table(
    "order_line",
    metadata,
    Column("id", String(80), primary_key=True),
    Column("order_id", String(64), ForeignKey("customer_order.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("sku", String(128), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price", Numeric(18, 4), nullable=False),
    Column("stage", Integer, nullable=False, default=0),
    Column("supplier_id", String(64), nullable=True),
    Column("unit_cost", Numeric(18, 4), nullable=True),
    Column("routing_failed", String(32), nullable=True),
    Column("waiting", String(32), nullable=True),  # why it waits for a supplier
)

allocation = Table(
    "allocation",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("order_id", String(64), ForeignKey("customer_order.id"), nullable=False, index=True),
    Column("supplier_id", String(64), nullable=False),
    Column("supplier_order_ref", String(128), nullable=False),
    Column("line_ids", JSON, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("ship_by", DateTime(timezone=True), nullable=False),
    Column("confirmed_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("order_id", "supplier_order_ref"),
)

shipment = Table(
    "shipment",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("order_id", String(64), ForeignKey("customer_order.id"), nullable=False, index=True),
    Column("supplier_id", String(64), nullable=False),
    Column("carrier", String(64), nullable=False),
    Column("tracking_number", String(128), nullable=False),
    Column("line_ids", JSON, nullable=False),
    Column("dispatched_at", DateTime(timezone=True), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("order_id", "tracking_number"),
)

order_timeline = Table(
    "order_timeline",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("event_id", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("time", DateTime(timezone=True), nullable=False),
    Column("source", String(32), nullable=False),
    Column("data", JSON, nullable=False),
    Column("note", String(500), nullable=True),
    # the ops console's cross-order reads (open delays) go by type, newest first
    Index("ix_order_timeline_type_time", "type", "time"),
)

idempotency_key = Table(
    "idempotency_key",
    metadata,
    Column("scope", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("response", JSON, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
)

marketplace_tombstone = Table(
    "marketplace_tombstone",
    metadata,
    Column("channel", String(32), primary_key=True),
    Column("shop_id", String(64), primary_key=True, default="", server_default=""),
    Column("external_id", String(128), primary_key=True),
    Column("reason", String(200), nullable=False),
    Column("cancelled_at", DateTime(timezone=True), nullable=False),
)
"""A marketplace cancelled an order we had not received yet: its creation must not live."""

webhook_delivery = Table(
    "webhook_delivery",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("shop_id", String(64), primary_key=True, default="", server_default=""),
    Column("delivery_id", String(128), primary_key=True),
    Column("topic", String(64), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, index=True),
)
