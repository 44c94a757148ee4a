"""The Grafana dashboard in deploy/grafana/ only charts metrics the services export."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import services.metrics.app
import services.supplier.app
import shared.runtime  # noqa: F401 - registers the platform's metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dropship-kpis.json"


def _exported() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
    return names


def test_every_panel_queries_a_metric_that_exists():
    assert services.metrics.app and services.supplier.app
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bdropship_[a-z_]+", e)}
    assert used, "no dropship metric charted"
    assert used - _exported() == set()
    assert {"dropship_kpi_orders_total", "dropship_consumer_lag", "dropship_outbox_backlog"} <= used
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
