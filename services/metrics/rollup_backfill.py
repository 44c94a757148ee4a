"""Rollups computed afresh from the stored facts (the migration that adds them; benchmarks).

Synchronous, on an alembic or plain SQLAlchemy connection; reads the facts of a few
thousand orders at a time and writes every rollup row at the end (there are far fewer
rollup rows than facts).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from services.metrics import rollup
from services.metrics.repository import aware

FACT_TABLES = (
    "sale",
    "sale_line",
    "confirmation",
    "confirmation_line",
    "dispatch",
    "delay",
    "delivery",
    "cancellation",
    "routing_failure",
    "hold",
    "hold_release",
    "notice",
)
CHUNK = 2000


def rollup_rows_of(orders: Iterable[rollup.OrderFacts]) -> dict[rollup.RollupRow, list[int]]:
    """The rollup rows of these orders' facts, summed."""
    cells: rollup.Contribution = {}
    for order in orders:
        for cell, (value, amount) in rollup.contribution(order).items():
            got = cells.setdefault(cell, [0, 0])
            got[0] += value
            got[1] += amount
    return rollup.rollup_rows(cells)


def backfill(connection: sa.Connection) -> int:
    """Fill the empty `kpi_rollup` from every fact stored; returns the rows written."""
    meta = sa.MetaData()
    tables = {name: sa.Table(name, meta, autoload_with=connection) for name in FACT_TABLES}
    ids: set[str] = set()
    for table in tables.values():
        ids.update(connection.execute(sa.select(table.c.order_id).distinct()).scalars())
    ordered = sorted(ids)
    cells: rollup.Contribution = {}
    for start in range(0, len(ordered), CHUNK):
        chunk = ordered[start : start + CHUNK]
        orders: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        for name, table in tables.items():
            moments = [c.name for c in table.columns if isinstance(c.type, sa.DateTime)]
            for r in connection.execute(sa.select(table).where(table.c.order_id.in_(chunk))):
                row = dict(r._mapping)
                for m in moments:
                    row[m] = aware(row[m])
                orders[row["order_id"]][name].append(row)
        for order in orders.values():
            for cell, (value, amount) in rollup.contribution(order).items():
                got = cells.setdefault(cell, [0, 0])
                got[0] += value
                got[1] += amount
    rows = rollup.rollup_rows(cells)
    target = sa.Table("kpi_rollup", meta, autoload_with=connection)
    names = [c.name for c in target.columns]
    values = [
        dict(zip(names, (*key, value, amount), strict=True))
        for key, (value, amount) in sorted(rows.items())
        if value or amount
    ]
    for start in range(0, len(values), 5000):
        connection.execute(sa.insert(target), values[start : start + 5000])
    return len(values)
