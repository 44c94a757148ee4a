"""Prometheus counters of what the metrics service has applied (process-local, after commit).

These feed alerting and Grafana (`deploy/grafana/`); the exact KPIs, rebuilt from the
topics, are served by `GET /v1/kpis`. Counters restart at zero with the process, which
Prometheus' `rate()` and `increase()` absorb.
"""

from __future__ import annotations

from collections import Counter as TallyOf
from collections.abc import Mapping, Sequence
from operator import itemgetter
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

RETURNS = Counter("dropship_kpi_returns", "Returns requested, by reason.", ["reason"])
REFUNDS = Counter(
    "dropship_kpi_refunds",
    "Refunds issued, by reason and who bears the cost.",
    ["reason", "cost_bearer"],
)
REFUNDED = Counter(
    "dropship_kpi_refunded",
    "Amount refunded, by currency and cost bearer.",
    ["currency", "cost_bearer"],
)
COMPLAINTS = Counter("dropship_kpi_complaints", "Complaints filed, by tier.", ["tier"])


_COUNTED: tuple[tuple[Counter, Table, tuple[str, ...]], ...] = (
    (ORDERS, t.sale, ("channel", "currency")),
    (CONFIRMATIONS, t.confirmation, ("supplier_id",)),
    (DISPATCHES, t.dispatch, ("supplier_id",)),
    (DELAYS, t.delay, ("supplier_id", "reason")),
    (DELIVERIES, t.delivery, ()),
    (CANCELLATIONS, t.cancellation, ()),
    (ROUTING_FAILURES, t.routing_failure, ("reason",)),
    (NOTIFICATIONS, t.notice, ("kind", "channel", "status")),
    (RETURNS, t.return_request, ("reason",)),
    (REFUNDS, t.refund, ("reason", "cost_bearer")),
    (COMPLAINTS, t.complaint, ("tier",)),
)
"""Counter, the fact table it counts, and the columns that are its labels."""


def observe(rows: Mapping[Table, Sequence[dict[str, Any]]]) -> None:
    """Count the facts of a committed batch (one increment per label set)."""
    gmv: TallyOf[str] = TallyOf()
    for r in rows.get(t.sale, ()):
        gmv[r["currency"]] += r["total_micros"]
    for currency, amount in gmv.items():
        GMV.labels(currency).inc(amount / 1_000_000)
    refunded: TallyOf[tuple[str, str]] = TallyOf()
    for r in rows.get(t.refund, ()):
        refunded[(r["currency"], r["cost_bearer"])] += r["amount_micros"]
    for (currency, bearer), amount in refunded.items():
        REFUNDED.labels(currency, bearer).inc(amount / 1_000_000)
    for counter, table, labels in _COUNTED:
        facts = rows.get(table)
        if not facts:
            continue
        if not labels:
            counter.inc(len(facts))
            continue
        pick = itemgetter(*labels)  # one name: the value itself, not a 1-tuple
        for values, n in TallyOf(map(pick, facts)).items():
            (counter.labels(*values) if len(labels) > 1 else counter.labels(values)).inc(n)
