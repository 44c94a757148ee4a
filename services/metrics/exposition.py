"""Prometheus counters of what the metrics service has applied (process-local, after commit).

These feed alerting and Grafana (`deploy/grafana/`); the exact KPIs, rebuilt from the
topics, are served by `GET /v1/kpis`. Counters restart at zero with the process, which
Prometheus' `rate()` and `increase()` absorb.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Table

from services.metrics import tables as t

ORDERS = Counter(
    "dropship_kpi_orders", "Orders placed (order-placed applied).", ["channel", "currency"]
)
GMV = Counter("dropship_kpi_gmv", "Gross merchandise value of orders placed.", ["currency"])
CONFIRMATIONS = Counter(
    "dropship_kpi_supplier_confirmations", "Supplier confirmations applied.", ["supplier_id"]
)
DISPATCHES = Counter("dropship_kpi_dispatches", "Shipments dispatched.", ["supplier_id"])
DELAYS = Counter(
    "dropship_kpi_delays",
    "Shipment delays reported, by supplier and reason.",
    ["supplier_id", "reason"],
)
DELIVERIES = Counter("dropship_kpi_deliveries", "Shipments delivered.")
CANCELLATIONS = Counter("dropship_kpi_cancellations", "Orders cancelled.")
ROUTING_FAILURES = Counter(
    "dropship_kpi_routing_failures", "Orders whose routing failed, by reason.", ["reason"]
)
NOTIFICATIONS = Counter(
    "dropship_kpi_notifications",
    "Notices sent to customers and ops, by kind, channel and status.",
    ["kind", "channel", "status"],
)


def observe(rows: Mapping[Table, Sequence[dict[str, Any]]]) -> None:
    """Count the facts of a committed batch."""
    for r in rows.get(t.sale, ()):
        ORDERS.labels(r["channel"], r["currency"]).inc()
        GMV.labels(r["currency"]).inc(r["total_micros"] / 1_000_000)
    for r in rows.get(t.confirmation, ()):
        CONFIRMATIONS.labels(r["supplier_id"]).inc()
    for r in rows.get(t.dispatch, ()):
        DISPATCHES.labels(r["supplier_id"]).inc()
    for r in rows.get(t.delay, ()):
        DELAYS.labels(r["supplier_id"], r["reason"]).inc()
    if rows.get(t.delivery):
        DELIVERIES.inc(len(rows[t.delivery]))
    if rows.get(t.cancellation):
        CANCELLATIONS.inc(len(rows[t.cancellation]))
    for r in rows.get(t.routing_failure, ()):
        ROUTING_FAILURES.labels(r["reason"]).inc()
    for r in rows.get(t.notice, ()):
        NOTIFICATIONS.labels(r["kind"], r["channel"], r["status"]).inc()
