"""PostgreSQL: the order tables' deferred writes and the timeline in one round trip.

When a consumer's chunk commits, `OrderRepository.flush` has up to four statements to send
(the moved `customer_order` columns, the moved lines, new allocations, new or delivered
shipments) and the timeline one more. At the live rates a chunk holds an event or two, so
each of those is a round trip of its own for one row. Here they are the parts of one
statement: data-modifying `WITH` queries, each fed by arrays (`unnest`), every part
always present (an empty array writes nothing), so the statement is prepared once.

The parts touch different tables and never read what another writes (a statement's
`WITH` queries all see the same snapshot), and each array holds a key at most once
(`_Deferred` keeps the latest row per key), so no row is written twice. SQLite keeps one
statement per table: it has no round trips to save.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text

from shared.uow import OUTBOX_PART_PG

_TIMELINE = (
    " INSERT INTO order_timeline (order_id, event_id, type, time, source, data, note)"
    " SELECT u.order_id, u.event_id, u.type, u.time, u.source, CAST(u.data AS json), u.note"
    " FROM unnest(CAST(:t_order_id AS text[]), CAST(:t_event_id AS text[]),"
    " CAST(:t_type AS text[]), CAST(:t_time AS timestamptz[]), CAST(:t_source AS text[]),"
    " CAST(:t_data AS text[]), CAST(:t_note AS text[]))"
    " WITH ORDINALITY AS u(order_id, event_id, type, time, source, data, note, n)"
    " ORDER BY u.n"  # ids in the order the entries were added, as the plain insert gives
)

STATEMENT = text(
    "WITH o AS ("  # noqa: S608  # fixed text: the timeline part is a constant
    " UPDATE customer_order AS c SET status = u.status, delayed = u.delayed,"
    " state = CAST(u.state AS json), holds = CAST(u.holds AS json),"
    " cancelled_at = u.cancelled_at, cancel_reason = u.cancel_reason,"
    " updated_at = u.updated_at"
    " FROM unnest(CAST(:o_id AS text[]), CAST(:o_status AS text[]),"
    " CAST(:o_delayed AS boolean[]), CAST(:o_state AS text[]), CAST(:o_holds AS text[]),"
    " CAST(:o_cancelled_at AS timestamptz[]), CAST(:o_cancel_reason AS text[]),"
    " CAST(:o_updated_at AS timestamptz[]))"
    " AS u(id, status, delayed, state, holds, cancelled_at, cancel_reason, updated_at)"
    " WHERE c.id = u.id"
    "), l AS ("
    " UPDATE order_line AS c SET stage = u.stage, supplier_id = u.supplier_id,"
    " unit_cost = u.unit_cost, routing_failed = u.routing_failed, waiting = u.waiting"
    " FROM unnest(CAST(:l_id AS text[]), CAST(:l_stage AS integer[]),"
    " CAST(:l_supplier_id AS text[]), CAST(:l_unit_cost AS numeric[]),"
    " CAST(:l_routing_failed AS text[]), CAST(:l_waiting AS text[]))"
    " AS u(id, stage, supplier_id, unit_cost, routing_failed, waiting)"
    " WHERE c.id = u.id"
    "), a AS ("
    " INSERT INTO allocation (order_id, supplier_id, supplier_order_ref, line_ids, currency,"
    " ship_by, confirmed_at)"
    " SELECT u.order_id, u.supplier_id, u.ref, CAST(u.line_ids AS json), u.currency,"
    " u.ship_by, u.confirmed_at"
    " FROM unnest(CAST(:a_order_id AS text[]), CAST(:a_supplier_id AS text[]),"
    " CAST(:a_ref AS text[]), CAST(:a_line_ids AS text[]), CAST(:a_currency AS text[]),"
    " CAST(:a_ship_by AS timestamptz[]), CAST(:a_confirmed_at AS timestamptz[]))"
    " WITH ORDINALITY AS u(order_id, supplier_id, ref, line_ids, currency, ship_by,"
    " confirmed_at, n)"
    " ORDER BY u.n"
    " ON CONFLICT DO NOTHING"
    "), s AS ("
    " INSERT INTO shipment (order_id, supplier_id, carrier, tracking_number, line_ids,"
    " dispatched_at, delivered_at)"
    " SELECT u.order_id, u.supplier_id, u.carrier, u.tracking, CAST(u.line_ids AS json),"
    " u.dispatched_at, u.delivered_at"
    " FROM unnest(CAST(:s_order_id AS text[]), CAST(:s_supplier_id AS text[]),"
    " CAST(:s_carrier AS text[]), CAST(:s_tracking AS text[]), CAST(:s_line_ids AS text[]),"
    " CAST(:s_dispatched_at AS timestamptz[]), CAST(:s_delivered_at AS timestamptz[]))"
    " WITH ORDINALITY AS u(order_id, supplier_id, carrier, tracking, line_ids,"
    " dispatched_at, delivered_at, n)"
    " ORDER BY u.n"
    " ON CONFLICT (order_id, tracking_number) DO UPDATE SET delivered_at = excluded.delivered_at"
    "), t AS (" + _TIMELINE + ") SELECT 1"
)
"""Every deferred write of a transaction's order tables and timeline; arrays by part."""

Row = Mapping[str, Any]


def _column(rows: Sequence[Row], name: str, as_json: bool = False) -> list[Any]:
    if as_json:
        return [json.dumps(r[name]) for r in rows]
    return [r[name] for r in rows]


def parameters(
    orders: Sequence[Row],
    lines: Sequence[Row],
    allocations: Sequence[Row],
    shipments: Sequence[Row],
    timeline: Sequence[Row],
) -> dict[str, list[Any]]:
    """The statement's arrays from the rows `OrderRepository` keeps (`_Deferred`, keyed
    `b_id` where an update names its row) and the timeline's rows (`timeline.event_row`)."""
    return {
        "o_id": _column(orders, "b_id"),
        "o_status": _column(orders, "status"),
        "o_delayed": _column(orders, "delayed"),
        "o_state": _column(orders, "state", as_json=True),
        "o_holds": _column(orders, "holds", as_json=True),
        "o_cancelled_at": _column(orders, "cancelled_at"),
        "o_cancel_reason": _column(orders, "cancel_reason"),
        "o_updated_at": _column(orders, "updated_at"),
        "l_id": _column(lines, "b_id"),
        "l_stage": _column(lines, "stage"),
        "l_supplier_id": _column(lines, "supplier_id"),
        "l_unit_cost": _column(lines, "unit_cost"),
        "l_routing_failed": _column(lines, "routing_failed"),
        "l_waiting": _column(lines, "waiting"),
        "a_order_id": _column(allocations, "order_id"),
        "a_supplier_id": _column(allocations, "supplier_id"),
        "a_ref": _column(allocations, "supplier_order_ref"),
        "a_line_ids": _column(allocations, "line_ids", as_json=True),
        "a_currency": _column(allocations, "currency"),
        "a_ship_by": _column(allocations, "ship_by"),
        "a_confirmed_at": _column(allocations, "confirmed_at"),
        "s_order_id": _column(shipments, "order_id"),
        "s_supplier_id": _column(shipments, "supplier_id"),
        "s_carrier": _column(shipments, "carrier"),
        "s_tracking": _column(shipments, "tracking_number"),
        "s_line_ids": _column(shipments, "line_ids", as_json=True),
        "s_dispatched_at": _column(shipments, "dispatched_at"),
        "s_delivered_at": _column(shipments, "delivered_at"),
        **_timeline(timeline),
    }


def _timeline(rows: Sequence[Row]) -> dict[str, list[Any]]:
    return {
        "t_order_id": _column(rows, "order_id"),
        "t_event_id": _column(rows, "event_id"),
        "t_type": _column(rows, "type"),
        "t_time": _column(rows, "time"),
        "t_source": _column(rows, "source"),
        "t_data": _column(rows, "data", as_json=True),
        "t_note": _column(rows, "note"),
    }


_ORDER_COLUMNS = (
    ("id", "text"),
    ("channel", "text"),
    ("external_id", "text"),
    ("shop_id", "text"),
    ("currency", "text"),
    ("status", "text"),
    ("delayed", "boolean"),
    ("customer_name", "text"),
    ("email", "text"),
    ("email_index", "text"),
    ("phone", "text"),
    ("locale", "text"),
    ("ship_line1", "text"),
    ("ship_line2", "text"),
    ("ship_city", "text"),
    ("ship_region", "text"),
    ("ship_postal_code", "text"),
    ("ship_country", "text"),
    ("state", "json"),
    ("holds", "json"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)
"""`rows.order_values`' columns with their types (json travels as text)."""

_LINE_COLUMNS = (
    ("id", "text"),
    ("order_id", "text"),
    ("position", "integer"),
    ("sku", "text"),
    ("quantity", "integer"),
    ("unit_price", "numeric"),
    ("stage", "integer"),
)
"""`rows.line_values`' columns with their types."""


def _insert(table: str, prefix: str, columns: Sequence[tuple[str, str]]) -> str:
    """`INSERT INTO table (columns) SELECT ... FROM unnest(one array per column)`."""
    names = ", ".join(name for name, _ in columns)
    arrays = ", ".join(
        f"CAST(:{prefix}_{name} AS {'text' if kind == 'json' else kind}[])"
        for name, kind in columns
    )
    picked = ", ".join(
        f"CAST(u.{name} AS json)" if kind == "json" else f"u.{name}" for name, kind in columns
    )
    # names come from the tuples above, never from input
    return f" INSERT INTO {table} ({names}) SELECT {picked} FROM unnest({arrays}) AS u({names})"  # noqa: S608


INTAKE = text(
    "WITH k AS ("  # noqa: S608  # fixed text, built once from the constants above
    " INSERT INTO idempotency_key (scope, key, request_hash, response, created_at)"
    " SELECT u.scope, u.key, u.request_hash, CAST(u.response AS json), :now"
    " FROM unnest(CAST(:k_scope AS text[]), CAST(:k_key AS text[]),"
    " CAST(:k_request_hash AS text[]), CAST(:k_response AS text[]))"
    " WITH ORDINALITY AS u(scope, key, request_hash, response, n)"
    " ORDER BY u.n"  # in the caller's order: two groups take the keys' locks alike
    " ON CONFLICT DO NOTHING RETURNING 1"
    "), o AS ("
    + _insert("customer_order", "o", _ORDER_COLUMNS)
    + "), l AS ("
    + _insert("order_line", "l", _LINE_COLUMNS)
    + "), t AS ("
    + _TIMELINE
    + "), x AS ("
    + OUTBOX_PART_PG
    + ") SELECT (SELECT count(*) FROM k) AS claimed, ARRAY(SELECT id FROM x ORDER BY id) AS ids"
)
"""New orders at intake: their idempotency claims (`claimed`: how many keys were free),
`customer_order` and `order_line` rows, timeline entries and outbox rows (`ids`)."""


def intake_parameters(
    claims: Sequence[tuple[str, str, str, dict[str, Any]]],
    orders: Sequence[Row],
    lines: Sequence[Row],
    timeline: Sequence[Row],
    outbox: Mapping[str, list[Any]],
    now: datetime,
) -> dict[str, Any]:
    """`INTAKE`'s arrays: `(scope, key, request_hash, result)` claims, `rows.order_values`,
    `rows.line_values`, `timeline.event_row`s and `OutboxTaken.arrays`."""
    params: dict[str, Any] = {
        "now": now,
        "k_scope": [c[0] for c in claims],
        "k_key": [c[1] for c in claims],
        "k_request_hash": [c[2] for c in claims],
        "k_response": [json.dumps(c[3]) for c in claims],
        **outbox,
        **_timeline(timeline),
    }
    for prefix, rows, columns in (("o", orders, _ORDER_COLUMNS), ("l", lines, _LINE_COLUMNS)):
        for name, kind in columns:
            params[f"{prefix}_{name}"] = _column(rows, name, as_json=kind == "json")
    return params
