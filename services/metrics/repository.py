"""Metrics repositories: fact rows written set-based and loaded per KPI window; applied events.

Both take `(session, dialect)` and never commit (the unit of work does), like the order
service's repositories.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import String, Table, and_, delete, func, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession

from services.metrics import domain
from services.metrics import tables as t
from services.metrics.bulk import insert_rows
from shared.db import inbox_table


def aware(moment: datetime | str | None) -> datetime | None:
    """A UTC datetime from what the database hands back (see `FactRepository._moment`)."""
    if moment is None:
        return None
    if isinstance(moment, str):  # SQLite, read raw: "2026-03-01 10:00:00.000000"
        # parsed with its offset: several times cheaper than `.replace(tzinfo=UTC)`
        return datetime.fromisoformat(moment + "+00:00")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _at(moment: datetime | str | None) -> datetime:
    value = aware(moment)
    assert value is not None
    return value


class AppliedEvents:
    """The metrics consumer's inbox rows: one per distinct event it has applied."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def counts(self, consumer: str) -> dict[str, int]:
        """Events applied, by type."""
        inbox = inbox_table
        rows = await self.session.execute(
            select(inbox.c.topic, func.count())
            .where(inbox.c.consumer == consumer)
            .group_by(inbox.c.topic)
        )
        return {topic: int(n) for topic, n in rows}

    async def forget(self, consumer: str) -> None:
        """Forget every event the consumer applied, so a replay applies them again."""
        await self.session.execute(delete(inbox_table).where(inbox_table.c.consumer == consumer))


class FactRepository:
    """Fact rows, one table per kind of event; loaded as `domain.Facts` for a KPI window."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def add(self, rows: Mapping[Table, Sequence[dict[str, Any]]]) -> None:
        """Insert fact rows, one statement per table; a fact already there stays.

        No shared counter row is updated here: partitions are applied concurrently, and
        a row every transaction updates would serialise them.
        """
        for table, batch in rows.items():
            await insert_rows(self.session, table, batch)

    async def clear(self) -> None:
        """Empty every fact table (a rebuild from the topics follows)."""
        for table in t.FACT_TABLES:
            await self.session.execute(delete(table))

    def _moment(self, column: Any, name: str | None = None) -> Any:
        """A datetime column to select; SQLite's raw text is parsed by `aware`, which is
        several times faster than SQLAlchemy's regex-based result processing."""
        if self.dialect == "sqlite":
            column = type_coerce(column, String)
        return column.label(name or column.name)

    async def load(self, start: datetime, end: datetime) -> domain.Facts:
        """Every fact the KPIs of [start, end) depend on, joined to the sale it belongs to."""
        facts = domain.Facts()
        s, c, cl = t.sale, t.confirmation, t.confirmation_line

        def within(column: Any) -> Any:
            return and_(column >= start, column < end)

        m = self._moment
        for r in await self.session.execute(
            select(
                s.c.order_id,
                s.c.channel,
                s.c.currency,
                s.c.total_micros,
                m(s.c.placed_at, "placed_at"),
            ).where(within(s.c.placed_at))
        ):
            facts.sales.append(
                domain.Sale(r.order_id, r.channel, r.currency, r.total_micros, _at(r.placed_at))
            )
        sl = t.sale_line
        confirmed_lines = (
            select(
                cl.c.order_id,
                cl.c.line_id,
                cl.c.quantity,
                cl.c.unit_cost_micros,
                cl.c.event_id,
                c.c.supplier_id,
                c.c.currency,
                m(c.c.confirmed_at, "confirmed_at"),
                sl.c.unit_price_micros,
            )
            .select_from(
                cl.join(c, c.c.event_id == cl.c.event_id)
                .join(sl, and_(sl.c.order_id == cl.c.order_id, sl.c.line_id == cl.c.line_id))
                .join(s, s.c.order_id == cl.c.order_id)
            )
            .where(within(s.c.placed_at))
        )
        for line in await self.session.execute(confirmed_lines):
            facts.confirmed_lines.append(
                domain.ConfirmedLine(
                    line.order_id,
                    line.line_id,
                    line.supplier_id,
                    line.currency,
                    line.quantity,
                    line.unit_cost_micros,
                    line.unit_price_micros,
                    _at(line.confirmed_at),
                    line.event_id,
                )
            )
        await self._load_supplier_orders(facts, within)
        await self._load_deliveries(facts, within)
        await self._load_occurrences(facts, within)
        return facts

    async def _load_supplier_orders(self, facts: domain.Facts, within: Any) -> None:
        s, c, d = t.sale, t.confirmation, t.dispatch
        candidates = select(c.c.order_id).where(or_(within(c.c.confirmed_at), within(c.c.ship_by)))
        pairs = (
            select(
                c.c.order_id,
                c.c.supplier_id,
                self._moment(func.min(c.c.confirmed_at), "confirmed_at"),
                self._moment(func.min(c.c.ship_by), "ship_by"),
            )
            .where(c.c.order_id.in_(candidates))
            .group_by(c.c.order_id, c.c.supplier_id)
            .subquery()
        )
        first_dispatch = (
            select(self._moment(func.min(d.c.dispatched_at), "first"))
            .where(d.c.order_id == pairs.c.order_id, d.c.supplier_id == pairs.c.supplier_id)
            .scalar_subquery()
        )
        reasons: dict[tuple[str, str], set[str]] = defaultdict(set)
        for r in await self.session.execute(
            select(t.delay.c.order_id, t.delay.c.supplier_id, t.delay.c.reason).where(
                t.delay.c.order_id.in_(candidates)
            )
        ):
            reasons[(r.order_id, r.supplier_id)].add(r.reason)
        for r in await self.session.execute(
            select(
                pairs,
                first_dispatch.label("dispatched_at"),
                self._moment(s.c.placed_at, "placed_at"),
                s.c.channel,
            ).join(s, s.c.order_id == pairs.c.order_id, isouter=True)
        ):
            facts.supplier_orders.append(
                domain.SupplierOrder(
                    r.order_id,
                    r.supplier_id,
                    _at(r.confirmed_at),
                    _at(r.ship_by),
                    aware(r.dispatched_at),
                    frozenset(reasons.get((r.order_id, r.supplier_id), ())),
                    aware(r.placed_at),
                    r.channel or domain.UNKNOWN,
                )
            )

    async def _load_deliveries(self, facts: domain.Facts, within: Any) -> None:
        s, dv, d = t.sale, t.delivery, t.dispatch
        shipper = (
            select(func.min(d.c.supplier_id))
            .where(d.c.order_id == dv.c.order_id, d.c.tracking_number == dv.c.tracking_number)
            .scalar_subquery()
        )
        for r in await self.session.execute(
            select(
                dv.c.order_id,
                dv.c.tracking_number,
                self._moment(dv.c.delivered_at, "delivered_at"),
                shipper.label("supplier_id"),
                self._moment(s.c.placed_at, "placed_at"),
                s.c.channel,
            )
            .join(s, s.c.order_id == dv.c.order_id, isouter=True)
            .where(within(dv.c.delivered_at))
        ):
            facts.deliveries.append(
                domain.Delivery(
                    r.order_id,
                    r.tracking_number,
                    r.supplier_id,
                    _at(r.delivered_at),
                    aware(r.placed_at),
                    r.channel or domain.UNKNOWN,
                )
            )

    async def _load_occurrences(self, facts: domain.Facts, within: Any) -> None:
        s = t.sale

        async def load(table: Table, at: Any, *columns: Any) -> list[Any]:
            result = await self.session.execute(
                select(table.c.order_id, self._moment(at, "at"), s.c.channel, *columns)
                .join(s, s.c.order_id == table.c.order_id, isouter=True)
                .where(within(at))
            )
            return list(result)

        for r in await load(t.cancellation, t.cancellation.c.cancelled_at, t.cancellation.c.reason):
            facts.cancellations.append(
                domain.Occurrence(r.order_id, r.channel or domain.UNKNOWN, _at(r.at), r.reason)
            )
        rf = t.routing_failure
        for r in await load(rf, rf.c.failed_at, rf.c.reason):
            facts.routing_failures.append(
                domain.Occurrence(r.order_id, r.channel or domain.UNKNOWN, _at(r.at), r.reason)
            )
        for r in await load(t.hold, t.hold.c.held_at, t.hold.c.reason):
            facts.holds.append(
                domain.Occurrence(r.order_id, r.channel or domain.UNKNOWN, _at(r.at), r.reason)
            )
        hr = t.hold_release
        for r in await load(hr, hr.c.released_at):
            facts.releases.append(
                domain.Occurrence(r.order_id, r.channel or domain.UNKNOWN, _at(r.at))
            )
        n = t.notice
        for r in await load(n, n.c.sent_at, n.c.kind, n.c.channel.label("via"), n.c.status):
            facts.notices.append(
                domain.Occurrence(
                    r.order_id,
                    r.channel or domain.UNKNOWN,
                    _at(r.at),
                    kind=r.kind,
                    notice_channel=r.via,
                    status=r.status,
                )
            )
