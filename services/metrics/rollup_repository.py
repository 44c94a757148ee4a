"""KPI rollups on the unit of work: deltas upserted with the facts, window sums for reads.

`apply` runs in the consumer's transaction before the facts are inserted: it locks the
batch's orders (PostgreSQL: transaction advisory locks in a fixed order, so partitions
applied at once never compute a delta from the same stale facts; SQLite: `BEGIN
IMMEDIATE` already serialises writers), loads their facts, and adds
`contribution(after) - contribution(before)` to the rollups with one upsert
(`value = value + excluded.value`), rows in key order so concurrent upserts cannot
deadlock. A fact already stored (a repeated event) changes nothing, so neither does its
delta.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from datetime import date, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    Table,
    TextClause,
    and_,
    cast,
    delete,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics import rollup
from services.metrics import tables as t
from services.metrics.repository import aware
from services.metrics.rows import Rows
from shared.db import READ_ONLY

LOCK_NAMESPACE = 7_201
"""First key of the metrics' order advisory locks (the second is the order id's hash)."""
FACT_KEYS = {table.name: [c.name for c in table.primary_key.columns] for table in t.KPI_FACT_TABLES}
_COLUMNS = [c.name for c in t.kpi_rollup.columns]
_UPSERT_PG = text(
    "INSERT INTO kpi_rollup (dim, period, start, key, metric, label, since, value, amount) "
    "SELECT * FROM unnest(CAST(:dim AS text[]), CAST(:period AS text[]), "
    "CAST(:start AS text[]), CAST(:key AS text[]), CAST(:metric AS text[]), "
    "CAST(:label AS text[]), CAST(:since AS text[]), CAST(:value AS bigint[]), "
    "CAST(:amount AS bigint[])) "
    "ON CONFLICT (dim, period, start, key, metric, label, since) DO UPDATE SET "
    "value = kpi_rollup.value + excluded.value, amount = kpi_rollup.amount + excluded.amount"
)
_UPSERT_SQLITE = (
    "INSERT INTO kpi_rollup (dim, period, start, key, metric, label, since, value, amount) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (dim, period, start, key, metric, label, since) DO UPDATE SET "
    "value = value + excluded.value, amount = amount + excluded.amount"
)
_BUMP_PG = text(
    "INSERT INTO kpi_day_revision (day, revision) "
    "SELECT day, 1 FROM unnest(CAST(:days AS text[])) AS d(day) "
    "ON CONFLICT (day) DO UPDATE SET revision = kpi_day_revision.revision + 1"
)
_BUMP_SQLITE = (
    "INSERT INTO kpi_day_revision (day, revision) VALUES (?, 1) "
    "ON CONFLICT (day) DO UPDATE SET revision = revision + 1"
)
_DAY_ROWS_PG = text(
    # per day an index lookup (`OFFSET 0` keeps the lateral subquery apart, so the plan is
    # a lookup per day whatever the statistics say: `start = ANY(:days)` or a plain join
    # scanned every day of the view when a fresh table's statistics said it was small)
    "SELECT d.day, r.metric, r.label, r.since, r.value, r.amount "
    "FROM unnest(CAST(:days AS text[])) AS d(day) CROSS JOIN LATERAL "
    "(SELECT metric, label, since, value, amount FROM kpi_rollup "
    "WHERE dim = 'all' AND period = 'd' AND start = d.day AND key = 'all' OFFSET 0) AS r"
)
_GROUP_ROWS_PG = text(
    # per row group an index lookup, as `_DAY_ROWS_PG`
    "SELECT g.period, g.start, r.key, r.metric, r.label, r.since, r.value, r.amount "
    "FROM unnest(CAST(:periods AS text[]), CAST(:starts AS text[])) AS g(period, start) "
    "CROSS JOIN LATERAL (SELECT key, metric, label, since, value, amount FROM kpi_rollup "
    "WHERE dim = :dim AND period = g.period AND start = g.start OFFSET 0) AS r"
)
_LOCK_PG = text(
    "SELECT pg_advisory_xact_lock(:ns, h) FROM "
    "(SELECT DISTINCT hashtext(o) AS h FROM unnest(CAST(:ids AS text[])) AS o ORDER BY h) AS s"
)


@cache
def _shape(table: Table) -> tuple[tuple[str, ...], tuple[str, ...], int]:
    """A fact table's column names, its moments' names, and where `order_id` is."""
    names = tuple(c.name for c in table.columns)
    moments = tuple(c.name for c in table.columns if isinstance(c.type, DateTime))
    return names, moments, names.index("order_id")


def _columns(table: Table, alias: str = "") -> str:
    return ", ".join(f'{alias}"{n}"' for n in _shape(table)[0])


@cache
def _select_pg(table: Table) -> TextClause:
    # a join with the ids, not `= ANY(:ids)`: the plan stays an index lookup per id however
    # the prepared statement's generic plan estimates the array (`= ANY` drifted to a scan)
    # names come from our own table definitions, never from input
    return text(
        f"SELECT {_columns(table, 'f.')} FROM unnest(CAST(:ids AS text[])) AS i(id) "  # noqa: S608
        f'JOIN "{table.name}" AS f ON f.order_id = i.id'
    )


@cache
def _select_sqlite(table: Table) -> str:
    return (
        f'SELECT {_columns(table)} FROM "{table.name}" '  # noqa: S608
        "WHERE order_id IN (SELECT value FROM json_each(?))"
    )


def _new_by_order(rows: Rows) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The KPI fact rows by order, then table name (plain dicts: this runs per event)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    get = out.get
    for table in t.KPI_FACT_TABLES:
        name = table.name
        for row in rows.get(table, ()):
            tables = get(row["order_id"])
            if tables is None:
                out[row["order_id"]] = {name: [row]}
            elif (have := tables.get(name)) is None:
                tables[name] = [row]
            else:
                have.append(row)
    return out


class RollupRepository:
    """The `kpi_rollup` table: deltas in, window sums out; never commits."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def apply(self, rows: Rows) -> None:
        """Add what the fact `rows` (not yet inserted) change to the rollups."""
        new = _new_by_order(rows)
        if not new:
            return
        ids = sorted(new)
        if self.dialect == "postgresql":
            await self.session.execute(_LOCK_PG, {"ns": LOCK_NAMESPACE, "ids": ids})
        _, reads = rollup.parts_reading({table for rows in new.values() for table in rows})
        existing = await self.facts_of(ids, reads)
        change = rollup.batch_delta(existing, new, FACT_KEYS)
        await self.add(rollup.rollup_rows(change))

    async def facts_of(
        self, order_ids: Sequence[str], tables: Collection[str]
    ) -> dict[str, dict[str, list[Any]]]:
        """The stored facts of these orders in these tables, by order and table (UTC times).

        One prebuilt statement per table, the ids bound as one parameter (PostgreSQL: an
        array; SQLite: a JSON array), rows read as plain tuples: no statement is compiled
        per batch and no row goes through SQLAlchemy's result processing."""
        out: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))
        connection = await self.session.connection()
        pg = self.dialect == "postgresql"
        distinct = list(dict.fromkeys(order_ids))  # PostgreSQL joins them: each id once
        ids: Any = distinct if pg else json.dumps(distinct)
        for table in t.KPI_FACT_TABLES:
            if table.name not in tables:
                continue
            names, moments, order_at = _shape(table)
            if pg:
                result = await connection.execute(_select_pg(table), {"ids": ids})
            else:
                result = await connection.exec_driver_sql(_select_sqlite(table), (ids,))
            for values in result.all():
                row = dict(zip(names, values, strict=True))
                for name in moments:
                    row[name] = aware(row[name])
                out[values[order_at]][table.name].append(row)
        return out

    async def add(self, rows: Mapping[rollup.RollupRow, Sequence[int]]) -> None:
        """Add each row's value and amount to the stored row (created at zero)."""
        ordered = sorted((k, v) for k, v in rows.items() if v[0] or v[1])
        if not ordered:
            return
        # the days whose rows change (any view), in order (after the rows: one lock order)
        days = sorted({k[2] for k, _ in ordered if k[1] == rollup.DAY})
        if self.dialect == "postgresql":
            columns = zip(*((*key, value, amount) for key, (value, amount) in ordered), strict=True)
            params = {name: list(column) for name, column in zip(_COLUMNS, columns, strict=True)}
            await self.session.execute(_UPSERT_PG, params)
            if days:
                await self.session.execute(_BUMP_PG, {"days": days})
            return
        connection = await self.session.connection()
        await connection.exec_driver_sql(
            _UPSERT_SQLITE, [(*key, value, amount) for key, (value, amount) in ordered]
        )
        if days:
            await connection.exec_driver_sql(_BUMP_SQLITE, [(day,) for day in days])

    async def clear(self) -> None:
        """Empty the rollups; every day's revision moves on (a copy read before is stale)."""
        await self.session.execute(delete(t.kpi_rollup))
        r = t.kpi_day_revision
        await self.session.execute(update(r).values(revision=r.c.revision + 1))

    async def day_revisions(self, first: date, last: date) -> dict[str, int]:
        """The revision of each day of `first`..`last` that was ever rolled up."""
        await self.session.connection(execution_options={READ_ONLY: True})
        r = t.kpi_day_revision
        query = select(r.c.day, r.c.revision).where(
            r.c.day >= first.isoformat(), r.c.day <= last.isoformat()
        )
        return {day: int(n) for day, n in (await self.session.execute(query)).all()}

    async def day_rows(
        self, days: Collection[str]
    ) -> dict[str, list[tuple[str, str, str, int, int]]]:
        """The whole-shop rollup rows of these days: day -> [(metric, label, since, value,
        amount)], every row (a histogram's every bin, every `since`), unsummed."""
        if not self.session.in_transaction():  # else: as `day_revisions` began it
            await self.session.connection(execution_options={READ_ONLY: True})
        r = t.kpi_rollup
        out: dict[str, list[tuple[str, str, str, int, int]]] = {day: [] for day in days}
        query: Any = _DAY_ROWS_PG.bindparams(days=sorted(days))
        if self.dialect != "postgresql":
            query = select(r.c.start, r.c.metric, r.c.label, r.c.since, r.c.value, r.c.amount)
            query = query.where(
                r.c.dim == rollup.ALL, r.c.period == rollup.DAY, r.c.key == rollup.ALL,
                r.c.start.in_(sorted(days)),
            )  # fmt: skip
        for day, metric, label, since, value, amount in (await self.session.execute(query)).all():
            out[day].append((metric, label, since, int(value), int(amount)))
        return out

    async def group_rows(
        self, dim: str, groups: Collection[tuple[str, str]]
    ) -> dict[tuple[str, str], list[tuple[str, str, str, str, int, int]]]:
        """The rows of one view (`dim`) in these row groups, (period, start) each: group ->
        [(key, metric, label, since, value, amount)], every row, unsummed."""
        if not self.session.in_transaction():  # else: as `day_revisions` began it
            await self.session.connection(execution_options={READ_ONLY: True})
        out: dict[tuple[str, str], list[tuple[str, str, str, str, int, int]]] = {
            group: [] for group in groups
        }
        ordered = sorted(groups)
        connection = await self.session.connection()
        rows: list[Any] = []
        if self.dialect == "postgresql":
            params = {
                "dim": dim,
                "periods": [p for p, _ in ordered],
                "starts": [s for _, s in ordered],
            }
            rows.extend((await connection.execute(_GROUP_ROWS_PG, params)).all())
        else:  # one select per period (an OR of the two made SQLite scan the whole view)
            r = t.kpi_rollup
            columns = (r.c.period, r.c.start, r.c.key, r.c.metric, r.c.label, r.c.since)
            for period in sorted({p for p, _ in ordered}):
                starts = [s for p, s in ordered if p == period]
                query = select(*columns, r.c.value, r.c.amount).where(
                    r.c.dim == dim, r.c.period == period, r.c.start.in_(starts)
                )
                rows.extend((await connection.execute(query)).all())
        for row in rows:  # sliced as plain tuples: a month is ~1,000 rows
            out[row[0], row[1]].append(row[2:])
        return out

    async def sums(
        self, dim: str, first: date, last: date, *, by: str | None, per_day: bool = False
    ) -> dict[str, dict[str, list[tuple[str, int, int]]]]:
        """metric -> [(label, value, amount)] summed over the days `first`..`last`, per
        `by` (`start`: per day; `key`: per channel or supplier; None: one total `all`).

        A window reads whole months from the monthly rows and only its ragged ends from
        the daily ones. A cell with `since` (a repeat) counts only if that earlier day is
        before the window; `per_day`: failed orders count per day as well. Histograms come
        back as `<metric>@count` (samples) and `<metric>@p50` / `@p95` (the count and
        millisecond sum of the bin holding that nearest-rank sample), found in SQL."""
        await self.session.connection(execution_options={READ_ONLY: True})
        r = t.kpi_rollup
        since_ok = r.c.since < first.isoformat()
        if per_day:
            since_ok = or_(since_ok, r.c.metric == "failed_orders")
        group = r.c.start if by == "start" else r.c.key if by == "key" else literal("all")
        where = (r.c.dim == dim, _periods(first, last, monthly=by != "start"), since_ok)
        counters = (
            select(group.label("k"), r.c.metric, r.c.label, _summed(r.c.value), _summed(r.c.amount))
            .where(*where, r.c.metric.not_in(rollup.HISTOGRAMS))
            .group_by(group, r.c.metric, r.c.label)
        )
        out: dict[str, dict[str, list[tuple[str, int, int]]]] = {}
        for k, metric, label, v, a in (await self.session.execute(counters)).all():
            cells = out.get(k) or out.setdefault(str(k), {})
            got = cells.get(metric)
            if got is None:
                cells[metric] = [(label, int(v), int(a))]
            else:
                got.append((label, int(v), int(a)))
        for k, metric, n, ms, cum, total in (
            await self.session.execute(_ranked(group, where))
        ).all():
            cells = out.get(k) or out.setdefault(str(k), {})
            cells[f"{metric}@count"] = [("", int(total), 0)]
            for q in (50, 95):
                wanted = max(1, -(-q * int(total) // 100))
                if int(cum) - int(n) < wanted <= int(cum):
                    cells[f"{metric}@p{q}"] = [("", int(n), int(ms))]
        return out


def _summed(column: Any) -> Any:
    """sum(column) as a bigint (PostgreSQL sums a bigint to numeric, read back as Decimal)."""
    return cast(func.sum(column), BigInteger)


def _ranked(group: Any, where: tuple[Any, ...]) -> Any:
    """The histogram bins holding each key's p50 and p95 sample (nearest rank), with the
    running and total sample counts: two rows per key and histogram, not every bin."""
    r = t.kpi_rollup
    bins = (
        select(
            group.label("k"),
            r.c.metric,
            cast(r.c.label, Integer).label("bin"),
            cast(func.sum(r.c.value), BigInteger).label("n"),
            cast(func.sum(r.c.amount), BigInteger).label("ms"),
        )
        .where(*where, r.c.metric.in_(rollup.HISTOGRAMS))
        .group_by(group, r.c.metric, r.c.label)
        .having(func.sum(r.c.value) > 0)
        .subquery()
    )
    per_key = (bins.c.k, bins.c.metric)
    running = (
        select(
            bins.c.k,
            bins.c.metric,
            bins.c.n,
            bins.c.ms,
            cast(func.sum(bins.c.n).over(partition_by=per_key, order_by=bins.c.bin), BigInteger)
            .label("cum"),
            cast(func.sum(bins.c.n).over(partition_by=per_key), BigInteger).label("total"),
        )
    ).subquery()  # fmt: skip
    c = running.c

    def holds(q: int) -> Any:
        wanted = (c.total * q + 99) // 100  # ceil(q% of total), at least 1 as total >= 1
        return and_(c.cum >= wanted, c.cum - c.n < wanted)

    return select(c.k, c.metric, c.n, c.ms, c.cum, c.total).where(or_(holds(50), holds(95)))


def _month_after(day: date) -> date:
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def _periods(first: date, last: date, *, monthly: bool) -> Any:
    """The rows covering first..last: whole months monthly, the rest daily."""
    r = t.kpi_rollup

    def days(a: date, b: date) -> Any:
        return and_(
            r.c.period == rollup.DAY, r.c.start >= a.isoformat(), r.c.start <= b.isoformat()
        )

    start = first if first.day == 1 else _month_after(first)
    end = start  # first day after the last whole month
    while monthly and _month_after(end) - timedelta(days=1) <= last:
        end = _month_after(end)
    if end == start:
        return days(first, last)
    months = and_(
        r.c.period == rollup.MONTH,
        r.c.start >= start.isoformat(),
        r.c.start < end.isoformat(),
    )
    return or_(months, days(first, start - timedelta(days=1)), days(end, last))
