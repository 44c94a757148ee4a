"""Order loads in one round trip: the order row and its lines, allocations and shipments as
ONE `UNION ALL` (statements built once per shape), regrouped into aggregates. No session here.

Each branch of the union is one table, tagged with `kind` and ordered by `seq`; a column a
branch lacks is a typed NULL, so PostgreSQL and SQLite agree on every column's type and
SQLAlchemy decodes each with its column's type. Child rows keep their tables' column names,
so `rows.order_from_rows` reads them as it reads table rows. No joins: rows add up
(lines + allocations + shipments + 1), they never multiply.

A load for update on PostgreSQL first locks the order row on its own (`lock`): a single
statement reads with the snapshot taken when it started, so after waiting on the lock it
would see the new order row but the children as they were before the holder committed.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Integer,
    Select,
    Table,
    and_,
    bindparam,
    cast,
    literal_column,
    null,
    select,
    union_all,
)

from services.order.domain import Order
from services.order.pii import PiiCipher
from services.order.repository.rows import LEAN_COLUMNS, order_from_rows
from services.order.tables import allocation, customer_order, order_line, shipment

Key = Literal["id", "ids", "external"]
"""How the orders are named: `order_id`; `order_ids` (a list); `channel`, `shop_id`
and `external_id` (a shop's order number)."""

ORDER, LINE, ALLOCATION, SHIPMENT = 0, 1, 2, 3
"""The `kind` of a row: which table it comes from."""

_CHILDREN: dict[int, tuple[Table, tuple[str, ...], str]] = {
    LINE: (
        order_line,
        (
            "id",
            "sku",
            "quantity",
            "unit_price",
            "stage",
            "supplier_id",
            "unit_cost",
            "routing_failed",
            "waiting",
        ),
        "position",
    ),
    ALLOCATION: (
        allocation,
        ("supplier_id", "supplier_order_ref", "line_ids", "currency", "ship_by", "confirmed_at"),
        "id",
    ),
    SHIPMENT: (
        shipment,
        ("supplier_id", "carrier", "tracking_number", "line_ids", "dispatched_at", "delivered_at"),
        "id",
    ),
}
"""kind -> (table, the columns the aggregate reads, the column that orders its rows)."""


def _order_where(key: Key) -> ColumnElement[bool]:
    c = customer_order.c
    if key == "id":
        return c.id == bindparam("order_id")
    if key == "ids":
        return c.id.in_(bindparam("order_ids", expanding=True))
    return and_(
        c.channel == bindparam("channel"),
        c.shop_id == bindparam("shop_id"),
        c.external_id == bindparam("external_id"),
    )


def _child_where(table: Table, key: Key) -> ColumnElement[bool]:
    if key == "id":
        return table.c.order_id == bindparam("order_id")
    if key == "ids":
        return table.c.order_id.in_(bindparam("order_ids", expanding=True))
    return table.c.order_id.in_(select(customer_order.c.id).where(_order_where(key)))


def _union(branches: Sequence[tuple[int, Select[Any], dict[str, Any]]]) -> CompoundSelect[Any]:
    """`UNION ALL` of `(kind, select, {label: column})` branches, each padded with typed
    NULLs to the same columns (`kind`, `seq`, `order_id`, then every label in order)."""
    labels: dict[str, Any] = {}
    for _, _, columns in branches:
        for label, column in columns.items():
            labels.setdefault(label, column.type)
    selects = []
    for kind, base, columns in branches:
        padded = [
            columns[label].label(label) if label in columns else cast(null(), type_).label(label)
            for label, type_ in labels.items()
        ]
        selects.append(base.add_columns(literal_column(str(kind), Integer).label("kind"), *padded))
    return union_all(*selects).order_by(
        literal_column("order_id"), literal_column("kind"), literal_column("seq")
    )


def _child_branches(key: Key) -> list[tuple[int, Select[Any], dict[str, Any]]]:
    branches = []
    for kind, (table, names, seq) in _CHILDREN.items():
        base = select(table.c.order_id.label("order_id"), table.c[seq].label("seq")).where(
            _child_where(table, key)
        )
        branches.append((kind, base, {n: table.c[n] for n in names}))
    return branches


@functools.cache
def load(key: Key, pii: bool) -> CompoundSelect[Any]:
    """The orders named by `key` with all their child rows; without `pii` no PII column
    (nor the e-mail's blind index) is named."""
    columns = customer_order.c if pii else LEAN_COLUMNS
    base = select(
        customer_order.c.id.label("order_id"),
        literal_column("0", Integer).label("seq"),
    ).where(_order_where(key))
    head = (ORDER, base, {c.name: c for c in columns if c.name != "email_index"})
    return _union([head, *_child_branches(key)])


@functools.cache
def children(key: Key) -> CompoundSelect[Any]:
    """Only the child rows of the orders named by `key` (their order rows are read already)."""
    return _union(_child_branches(key))


@functools.cache
def lock(key: Key) -> Select[Any]:
    """Lock the orders named by `key` (ids in order, so two lockers cannot deadlock)."""
    c = customer_order.c
    return select(c.id).where(_order_where(key)).order_by(c.id).with_for_update()


def group(rows: Iterable[Any]) -> dict[str, dict[int, list[Any]]]:
    """Rows of `load`/`children` by order id, then by kind (in `seq` order)."""
    grouped: dict[str, dict[int, list[Any]]] = {}
    for row in rows:
        kinds = grouped.get(row.order_id)
        if kinds is None:
            kinds = grouped[row.order_id] = {ORDER: [], LINE: [], ALLOCATION: [], SHIPMENT: []}
        kinds[row.kind].append(row)
    return grouped


def assemble(head: Any, kinds: dict[int, list[Any]] | None, cipher: PiiCipher | None) -> Order:
    """The aggregate from its order row and its grouped child rows (None: it has none)."""
    if kinds is None:
        return order_from_rows(head, [], [], [], cipher)
    return order_from_rows(head, kinds[LINE], kinds[ALLOCATION], kinds[SHIPMENT], cipher)


def orders(rows: Iterable[Any], cipher: PiiCipher | None) -> list[Order]:
    """The aggregates in the rows of `load`, in order id order."""
    return [assemble(kinds[ORDER][0], kinds, cipher) for kinds in group(rows).values()]
