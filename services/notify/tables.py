"""Notify service tables. No contact details are stored: they are fetched at send time."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
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

from shared.db import new_metadata

metadata = new_metadata()

order_fact = Table(
    "order_fact",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("external_id", String(128), nullable=True),
    Column("channel", String(32), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False),
    Column("lines", JSON, nullable=False),  # [{line_id, sku, quantity}]
)

supplier_share = Table(
    "supplier_share",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("supplier_id", String(64), primary_key=True),
    Column("line_ids", JSON, nullable=False),
    Column("ship_by", DateTime(timezone=True), nullable=True),
)

notification = Table(
    "notification",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("dedupe_key", String(200), nullable=False),
    Column("channel", String(32), nullable=False),  # email, sms, slack, dingtalk, ...
    Column("target", String(64), nullable=False),  # "customer" or the ops channel's name
    Column("recipient_kind", String(16), nullable=False),  # customer | ops
    Column("order_id", String(64), nullable=True),
    Column("kind", String(40), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("alert_id", String(36), nullable=True),
    Column("severity", String(16), nullable=True),
    Column("template", String(80), nullable=False),
    Column("locale", String(16), nullable=True),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime(timezone=True), nullable=False),
    Column("lease_until", DateTime(timezone=True), nullable=True),
    Column("last_error", Text, nullable=True),
    Column("details", JSON, nullable=False),
    Column("recipient_hash", String(64), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("dedupe_key", "channel", "target"),
    Index("ix_notification_due", "status", "next_attempt_at"),
    Index("ix_notification_order", "order_id", "created_at"),
    Index("ix_notification_recipient", "recipient_hash", "sent_at"),
)

order_hold = Table(
    "order_hold",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("reason", String(32), primary_key=True),
    Column("held_at", DateTime(timezone=True), primary_key=True),
    Column("released_at", DateTime(timezone=True), nullable=True),
    Column("alerted_at", DateTime(timezone=True), nullable=True),
    Index("ix_order_hold_open", "released_at", "alerted_at", "held_at"),
)

order_release = Table(
    "order_release",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("released_at", DateTime(timezone=True), nullable=True),
)

alert = Table(
    "alert",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("kind", String(40), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("order_id", String(64), nullable=True),
    Column("title", Text, nullable=False),
    Column("details", JSON, nullable=False),
    Column("raised_at", DateTime(timezone=True), nullable=False),
    Column("due_at", DateTime(timezone=True), nullable=False),
    Column("escalations", Integer, nullable=False, default=0),
    Column("acked_at", DateTime(timezone=True), nullable=True),
    Column("acked_by", String(200), nullable=True),
    Index("ix_alert_open_due", "acked_at", "due_at"),
)

watch_state = Table(
    "watch_state",
    metadata,
    Column("topic", String(128), primary_key=True),
    Column("depth", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("written", BigInteger, nullable=True),
    # letters ever written to the queue (its end offsets): only grows, unlike `depth`
)

supplier_status = Table(
    "supplier_status",
    metadata,
    Column("supplier_id", String(64), primary_key=True),
    Column("available", Boolean, nullable=False),
    Column("outages", Integer, nullable=False),  # numbers each outage: one alert per outage
    Column("changed_at", DateTime(timezone=True), nullable=True),
)

waiting_watch = Table(
    "waiting_watch",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("line_id", String(80), primary_key=True),
    Column("since", DateTime(timezone=True), nullable=False),
    Column("alerted", Boolean, nullable=False),
)
"""Lines waiting for a supplier (`order-lines-waiting`), until confirmed, failed or cancelled."""

complaint_watch = Table(
    "complaint_watch",
    metadata,
    Column("complaint_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=True),  # null until `complaint-filed` arrives
    Column("tier", String(16), nullable=True),
    Column("filed_at", DateTime(timezone=True), nullable=True),
    Column("respond_by", DateTime(timezone=True), nullable=True),
    Column("resolve_by", DateTime(timezone=True), nullable=True),
    Column("responded_at", DateTime(timezone=True), nullable=True),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("resolution_alerted_at", DateTime(timezone=True), nullable=True),
    Index("ix_complaint_watch_unresolved", "resolved_at", "resolution_alerted_at", "resolve_by"),
)
"""Complaints as their events told them (three topics, any order): the response and
resolution targets ops are alerted on. No summary: it stays in the order service."""
