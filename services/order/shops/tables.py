"""Shop tables in the order database: shops (secrets sealed), order origins, write-back queue."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.order.tables import metadata
from shared.db import Id

marketplace_shop = Table(
    "marketplace_shop",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("platform", String(16), nullable=False),
    Column("domain", String(255), nullable=False),
    Column("api_base_url", String(500), nullable=False),
    Column("webhook_secret", Text, nullable=False),  # sealed
    Column("access_token", Text, nullable=True),  # sealed
    Column("consumer_key", Text, nullable=True),  # sealed
    Column("consumer_secret", Text, nullable=True),  # sealed
    Column("notify_customer", Boolean, nullable=False),
    Column("active", Boolean, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("platform", "domain"),
)

order_shop = Table(
    "order_shop",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("shop_id", String(64), nullable=False, index=True),
    Column("external_id", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

marketplace_writeback = Table(
    "marketplace_writeback",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("key", String(255), nullable=False, unique=True),
    Column("kind", String(16), nullable=False),
    Column("order_id", String(64), nullable=False, index=True),
    Column("shop_id", String(64), nullable=False),
    Column("external_id", String(128), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("status", String(16), nullable=False),  # pending | done | failed
    Column("attempts", Integer, nullable=False),
    Column("next_at", DateTime(timezone=True), nullable=False),
    Column("last_error", String(500), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("done_at", DateTime(timezone=True), nullable=True),
    Index("ix_marketplace_writeback_due", "status", "next_at"),
)
