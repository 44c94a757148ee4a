"""Metrics service tables: insert-only fact tables, one per kind of event, KPIs computed on read.

Facts are keyed by the event id (the order id for a sale; the return, refund or
complaint id for its request, refund or filing), so a fact exists once
however often its event arrives, and the tables hold the same rows whatever order the
events came in: a KPI that joins two topics (margin needs the sale and the supplier's
confirmation) is computed when it is asked for, never half-way at ingestion.
Money is stored as integer micro-units (`*_micros`, 10^-6 of the currency unit), so
sums are exact on SQLite as well as PostgreSQL. Times are UTC event times.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Index, Integer, String, Table

from shared.db import new_metadata

metadata = new_metadata()

sale = Table(
    "sale",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total_micros", BigInteger, nullable=False),
    Column("units", Integer, nullable=False),
    Column("placed_at", DateTime(timezone=True), nullable=False, index=True),
)

sale_line = Table(
    "sale_line",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("line_id", String(80), primary_key=True),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_micros", BigInteger, nullable=False),
)

confirmation = Table(
    "confirmation",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("supplier_id", String(64), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("confirmed_at", DateTime(timezone=True), nullable=False, index=True),
    Column("ship_by", DateTime(timezone=True), nullable=False, index=True),
    Index("ix_confirmation_order_supplier", "order_id", "supplier_id"),
)

confirmation_line = Table(
    "confirmation_line",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("line_id", String(80), primary_key=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("quantity", Integer, nullable=False),
    Column("unit_cost_micros", BigInteger, nullable=False),
)

dispatch = Table(
    "dispatch",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("supplier_id", String(64), nullable=False),
    Column("tracking_number", String(128), nullable=False),
    Column("dispatched_at", DateTime(timezone=True), nullable=False),
    Index("ix_dispatch_order_supplier", "order_id", "supplier_id"),
)

delay = Table(
    "delay",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("supplier_id", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("severity", String(16), nullable=False),
    Column("delayed_at", DateTime(timezone=True), nullable=False),
    Index("ix_delay_order_supplier", "order_id", "supplier_id"),
)

delivery = Table(
    "delivery",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False, index=True),
    Column("tracking_number", String(128), nullable=False),
    Column("delivered_at", DateTime(timezone=True), nullable=False, index=True),
)

cancellation = Table(
    "cancellation",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("reason", String(200), nullable=False),
    Column("cancelled_at", DateTime(timezone=True), nullable=False, index=True),
)

routing_failure = Table(
    "routing_failure",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("lines", Integer, nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False, index=True),
)

hold = Table(
    "hold",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("held_at", DateTime(timezone=True), nullable=False, index=True),
)

hold_release = Table(
    "hold_release",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("released_at", DateTime(timezone=True), nullable=False, index=True),
)

notice = Table(
    "notice",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("kind", String(64), nullable=False),
    Column("channel", String(64), nullable=False),
    Column("recipient_kind", String(16), nullable=False),
    Column("status", String(32), nullable=False),
    Column("sent_at", DateTime(timezone=True), nullable=False, index=True),
)

return_request = Table(
    "return_request",
    metadata,
    Column("return_id", String(64), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("order_id", String(64), nullable=False, index=True),
    Column("reason", String(32), nullable=False),
    Column("units", Integer, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False, index=True),
)

return_line = Table(
    "return_line",
    metadata,
    Column("return_id", String(64), primary_key=True),
    Column("line_id", String(80), primary_key=True),
    Column("quantity", Integer, nullable=False),
    Column("supplier_id", String(64), nullable=True),
)

return_step = Table(
    "return_step",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("return_id", String(64), nullable=False, index=True),
    Column("step", String(16), nullable=False),
    Column("supplier_id", String(64), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
)
"""Authorised, rejected or received: one row per event, the step names which."""

refund = Table(
    "refund",
    metadata,
    Column("refund_id", String(64), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("return_id", String(64), nullable=True, index=True),
    Column("currency", String(3), nullable=False),
    Column("amount_micros", BigInteger, nullable=False),
    Column("reason", String(32), nullable=False),
    Column("cost_bearer", String(16), nullable=False),
    Column("supplier_id", String(64), nullable=True),
    Column("channel", String(64), nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False, index=True),
)

complaint = Table(
    "complaint",
    metadata,
    Column("complaint_id", String(64), primary_key=True),
    Column("event_id", String(64), nullable=False),
    Column("order_id", String(64), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("filed_at", DateTime(timezone=True), nullable=False, index=True),
    Column("respond_by", DateTime(timezone=True), nullable=False),
    Column("resolve_by", DateTime(timezone=True), nullable=False),
)

complaint_step = Table(
    "complaint_step",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("complaint_id", String(64), nullable=False, index=True),
    Column("order_id", String(64), nullable=False),
    Column("step", String(16), nullable=False),
    Column("tier", String(16), nullable=False),
    Column("filed_at", DateTime(timezone=True), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
)
"""Responded or resolved; carries the tier and filing time, so it stands without its filing."""

marketplace_sync_failure = Table(
    "marketplace_sync_failure",
    metadata,
    Column("event_id", String(64), primary_key=True),
    Column("order_id", String(64), nullable=False),
    Column("platform", String(16), nullable=False),
    Column("operation", String(16), nullable=False),
    Column("failed_at", DateTime(timezone=True), nullable=False, index=True),
)
"""Write-backs to a shop that gave up (`marketplace-sync-failed`)."""

kpi_rollup = Table(
    "kpi_rollup",
    metadata,
    Column("dim", String(16), primary_key=True),
    Column("period", String(1), primary_key=True),
    Column("start", String(10), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("metric", String(32), primary_key=True),
    Column("label", String(300), primary_key=True),
    Column("since", String(10), primary_key=True),
    Column("value", BigInteger, nullable=False),
    Column("amount", BigInteger, nullable=False),
)
"""KPI rollups (`rollup.py`): per view (`dim` all / channel / supplier and its `key`), per
day (`period` d) and month (m) starting on `start` (YYYY-MM-DD), a metric cell's summed
value and amount. Upserted with deltas in the transaction that writes the facts."""

kpi_day_revision = Table(
    "kpi_day_revision",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("revision", BigInteger, nullable=False),
)
"""How many times the rollup rows of a UTC day (`kpi_rollup` period d, any view) changed:
bumped in the transaction that changes them (and by a rebuild's reset), never reset, so a
reader's copy of a day's rows (or of its month's, with the month's other days) is current
exactly while the revision is; a day without one has no rows."""

KPI_FACT_TABLES = (
    sale,
    sale_line,
    confirmation,
    confirmation_line,
    dispatch,
    delay,
    delivery,
    cancellation,
    routing_failure,
    hold,
    hold_release,
    notice,
)
"""The facts the order KPIs (and so the rollups) are computed from; each has `order_id`."""

FACT_TABLES = (
    *KPI_FACT_TABLES,
    return_request,
    return_line,
    return_step,
    refund,
    complaint,
    complaint_step,
    marketplace_sync_failure,
)
"""Everything a rebuild empties (with the metrics consumer's inbox rows)."""

for _table in (cancellation, routing_failure, hold, hold_release, notice):
    Index(f"ix_{_table.name}_order_id", _table.c.order_id)
