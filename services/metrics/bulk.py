"""Set-based inserts of fact rows: one statement per table and batch, whatever its size.

SQLAlchemy's executemany builds and type-processes every row in Python, which costs
more than the rest of ingestion together. Here PostgreSQL gets one
`INSERT ... SELECT * FROM unnest(<one array per column>)` (a fixed statement, prepared
once, arrays sent binary) and SQLite one driver-level `executemany` of plain tuples.
A row whose key is already there is skipped (`ON CONFLICT DO NOTHING` / `OR IGNORE`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache
from operator import itemgetter
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String, Table, TextClause, text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import sqlite_moment

_PG_ARRAY = (
    (BigInteger, "bigint[]"),
    (Integer, "integer[]"),
    (DateTime, "timestamptz[]"),
    (String, "text[]"),
)


def _pg_array(column: Any) -> str:
    for sql_type, array in _PG_ARRAY:
        if isinstance(column.type, sql_type):
            return array
    raise TypeError(f"no array type for {column}")


@cache
def _pg_statement(table: Table) -> TextClause:
    names = [c.name for c in table.columns]
    arrays = ", ".join(
        f"CAST(:{n} AS {_pg_array(c)})" for n, c in zip(names, table.columns, strict=True)
    )
    columns = ", ".join(f'"{n}"' for n in names)
    # names come from our own table definitions, never from input
    return text(
        f'INSERT INTO "{table.name}" ({columns}) SELECT * FROM unnest({arrays}) '  # noqa: S608
        "ON CONFLICT DO NOTHING"
    )


def _getter(names: Sequence[str]) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """`row -> tuple of these columns` (always a tuple, even of one or no column)."""
    if len(names) > 1:
        return itemgetter(*names)
    return lambda r: tuple(r[n] for n in names)


@cache
def _sqlite_statement(table: Table) -> tuple[str, Callable[[dict[str, Any]], tuple[Any, ...]]]:
    """The insert, its moments last, and what turns a row into its parameters (moments as
    `SQLITE_DATETIME` text): plain columns picked by one `itemgetter`, no loop per row."""
    plain = tuple(c.name for c in table.columns if not isinstance(c.type, DateTime))
    moments = tuple(c.name for c in table.columns if isinstance(c.type, DateTime))
    columns = ", ".join(f'"{n}"' for n in (*plain, *moments))
    marks = ", ".join("?" for _ in (*plain, *moments))
    sql = f'INSERT OR IGNORE INTO "{table.name}" ({columns}) VALUES ({marks})'  # noqa: S608
    values = _getter(plain)
    if not moments:
        return sql, values

    def params(row: dict[str, Any]) -> tuple[Any, ...]:
        return (*values(row), *[sqlite_moment(row[n]) for n in moments])

    return sql, params


async def insert_rows(session: AsyncSession, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Insert `rows` (dicts with every column of `table`) in one statement."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        params = {c.name: [r[c.name] for r in rows] for c in table.columns}
        await session.execute(_pg_statement(table), params)
        return
    sql, params_of = _sqlite_statement(table)
    connection = await session.connection()
    await connection.exec_driver_sql(sql, list(map(params_of, rows)))
