"""PostgreSQL: a supplier transaction's writes at commit in one round trip.

When a supplier unit of work commits, up to three statements were left to send: the
supplier orders' changes `save` held back (`defer_saves`, one `UPDATE` per set of
changed columns), the supplier counter increments (`supplier_tally`, appended), and the
outbox rows. A callback group at the live rates holds a callback or two, so each of those
was a round trip of its own for a row or two. Here they are the parts of one statement:
data-modifying `WITH` queries fed by arrays (`unnest`), every part always present (an
empty array writes nothing), so the statement is prepared once.

The supplier order part sets only the columns each row changed: every settable column
has its array, and a bit mask per row says which of them to take (the others keep their
stored value, so a column another statement of the transaction wrote is left as it is).
The parts write different tables and read nothing another writes, and each order is in
its array once, so no row is written twice. SQLite keeps one statement per table: it has
no round trips to save.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Integer, String, text

from services.supplier.domain.catalogue import COUNTERS
from services.supplier.tables import supplier_order
from shared.uow import OUTBOX_PART_PG, OutboxTaken

_FIXED = frozenset({"id", "order_id", "supplier_id", "created_at"})
"""Columns a supplier order never changes after it is added."""


def _kind(column_type: Any) -> str:
    for python_type, name in (
        (Boolean, "boolean"),
        (DateTime, "timestamptz"),
        (Float, "float8"),
        (Integer, "integer"),
        (String, "text"),
    ):
        if isinstance(column_type, python_type):
            return name
    raise TypeError(f"no array type for {column_type!r}")  # a new column: name its type here


SETTABLE = tuple((c.name, _kind(c.type)) for c in supplier_order.c if c.name not in _FIXED)
"""The supplier order columns the statement can set, with their array types."""
_BIT = {name: 1 << i for i, (name, _) in enumerate(SETTABLE)}

_SETS = ", ".join(
    f"{name} = CASE WHEN u.m & {_BIT[name]} <> 0 THEN u.{name} ELSE c.{name} END"
    for name, _ in SETTABLE
)
_NAMES = ", ".join(name for name, _ in SETTABLE)
_ARRAYS = ", ".join(f"CAST(:s_{name} AS {kind}[])" for name, kind in SETTABLE)
_COUNTS = ", ".join(COUNTERS)

STATEMENT = text(
    "WITH s AS ("  # noqa: S608  # fixed text, built once from the table's own columns
    f" UPDATE supplier_order AS c SET {_SETS}"
    f" FROM unnest(CAST(:s_id AS text[]), CAST(:s_m AS integer[]), {_ARRAYS})"
    f" AS u(id, m, {_NAMES}) WHERE c.id = u.id"
    "), t AS ("
    f" INSERT INTO supplier_tally (supplier_id, {_COUNTS})"
    " SELECT * FROM unnest(CAST(:t_supplier_id AS text[]), "
    + ", ".join(f"CAST(:t_{name} AS integer[])" for name in COUNTERS)
    + ")"
    "), x AS (" + OUTBOX_PART_PG + ") SELECT ARRAY(SELECT id FROM x ORDER BY id) AS ids"
)
"""Held supplier order changes, counter increments and outbox rows (`ids`), together."""


def settable(held: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether every change held back names a column the statement sets."""
    return all(name in _BIT for values in held.values() for name in values)


def parameters(
    held: Mapping[str, Mapping[str, Any]],
    tally: Mapping[str, Mapping[str, int]],
    outbox: OutboxTaken | None,
    now: datetime,
) -> dict[str, Any]:
    """The statement's arrays: held changes by supplier order id (column -> value, as the
    drivers want them), increments by supplier id, the outbox rows taken."""
    ids = list(held)
    params: dict[str, Any] = {
        "now": now,
        "s_id": ids,
        "s_m": [sum(_BIT[name] for name in held[i]) for i in ids],
        "t_supplier_id": sorted(tally),
    }
    for name, _ in SETTABLE:
        params[f"s_{name}"] = [held[i].get(name) for i in ids]
    for name in COUNTERS:
        params[f"t_{name}"] = [int(tally[s].get(name, 0)) for s in params["t_supplier_id"]]
    return params | (outbox or OutboxTaken([])).arrays()
