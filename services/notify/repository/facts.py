"""What notify knows of the world: order facts, DLQ depths and supplier availability."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.domain import FactLine, OrderFact, SupplierWatch
from services.notify.tables import order_fact, supplier_share, supplier_status, watch_state
from shared.db import aware, dialect_insert, insert_skipping_conflicts, per_dialect


def _record_share(dialect: str) -> Any:
    stmt = dialect_insert(dialect)(supplier_share)
    return stmt.on_conflict_do_update(
        index_elements=[supplier_share.c.order_id, supplier_share.c.supplier_id],
        set_={"line_ids": stmt.excluded.line_ids, "ship_by": stmt.excluded.ship_by},
    )


# Built once (each event of an order runs one of them): executions hand over parameters.
_ADD_FACT = insert_skipping_conflicts(order_fact)
_GET_FACT = select(order_fact).where(order_fact.c.order_id == bindparam("p_order_id"))
_RECORD_SHARE = per_dialect(_record_share)


class OrderFacts:
    """Orders as their events described them, and which lines each supplier took."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect
        self._defer = False
        self._facts: dict[str, dict[str, Any]] = {}
        """Kept facts by order id: the first wins, as the insert skipping conflicts does."""
        self._shares: dict[tuple[str, str], dict[str, Any]] = {}
        """Kept shares by (order id, supplier id): the latest wins, as the upsert does."""

    def defer_writes(self) -> None:
        """From now on `add` and `record_share` keep their rows until `write_kept`, which
        writes each table's in one statement (an executemany); reads here write them first."""
        self._defer = True

    async def write_kept(self) -> None:
        facts, shares = list(self._facts.values()), list(self._shares.values())
        self._facts, self._shares = {}, {}
        if facts:
            await self.session.execute(_ADD_FACT[self.dialect], facts)
        if shares:
            await self.session.execute(_RECORD_SHARE[self.dialect], shares)

    async def add(self, fact: OrderFact) -> None:
        """Record a placed order (once: a redelivery changes nothing)."""
        row = {
            "order_id": fact.order_id,
            "external_id": fact.external_id,
            "channel": fact.channel,
            "currency": fact.currency,
            "placed_at": fact.placed_at,
            "lines": [
                {"line_id": line.line_id, "sku": line.sku, "quantity": line.quantity}
                for line in fact.lines
            ],
        }
        if self._defer:
            self._facts.setdefault(fact.order_id, row)
            return
        await self.session.execute(_ADD_FACT[self.dialect], row)

    async def get(self, order_id: str) -> OrderFact | None:
        await self.write_kept()
        row = (await self.session.execute(_GET_FACT, {"p_order_id": order_id})).first()
        if row is None:
            return None
        return OrderFact(
            order_id=row.order_id,
            external_id=row.external_id,
            channel=row.channel,
            currency=row.currency,
            placed_at=aware(row.placed_at) or row.placed_at,
            lines=[FactLine(ln["line_id"], ln["sku"], int(ln["quantity"])) for ln in row.lines],
        )

    async def record_share(
        self, order_id: str, supplier_id: str, line_ids: list[str], ship_by: datetime
    ) -> None:
        """The lines a supplier confirmed (its latest confirmation wins)."""
        row = {
            "order_id": order_id,
            "supplier_id": supplier_id,
            "line_ids": line_ids,
            "ship_by": ship_by,
        }
        if self._defer:
            self._shares[(order_id, supplier_id)] = row
            return
        await self.session.execute(_RECORD_SHARE[self.dialect], row)

    async def share_lines(self, order_id: str, supplier_id: str) -> list[str] | None:
        """The lines a supplier confirmed; None before its confirmation arrived."""
        await self.write_kept()
        query = select(supplier_share.c.line_ids).where(
            supplier_share.c.order_id == order_id, supplier_share.c.supplier_id == supplier_id
        )
        found = (await self.session.execute(query)).scalar_one_or_none()
        return None if found is None else [str(line_id) for line_id in found]


class DlqDepths:
    """Each dead-letter queue at the last reading: `(depth, letters ever written)`."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def all(self) -> dict[str, tuple[int, int]]:
        """A queue read before `written` was kept counts its depth as written."""
        rows = await self.session.execute(
            select(watch_state.c.topic, watch_state.c.depth, watch_state.c.written)
        )
        return {
            topic: (int(depth), int(depth if written is None else written))
            for topic, depth, written in rows.all()
        }

    async def set(self, topic: str, depth: int, written: int) -> None:
        now = datetime.now(UTC)
        values = {"depth": depth, "written": written, "updated_at": now}
        stmt = dialect_insert(self.dialect)(watch_state).values(topic=topic, **values)
        stmt = stmt.on_conflict_do_update(index_elements=[watch_state.c.topic], set_=values)
        await self.session.execute(stmt)


class SupplierWatches:
    """Each supplier's availability, as its status events told it."""

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def get(self, supplier_id: str) -> SupplierWatch:
        """The supplier's watch, locked for update; a fresh (available) one if never seen."""
        query = select(supplier_status).where(supplier_status.c.supplier_id == supplier_id)
        if self.dialect == "postgresql":
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        if row is None:
            return SupplierWatch(supplier_id)
        return SupplierWatch(
            supplier_id=row.supplier_id,
            available=row.available,
            outages=row.outages,
            changed_at=aware(row.changed_at),
        )

    async def save(self, watch: SupplierWatch) -> None:
        values = {
            "available": watch.available,
            "outages": watch.outages,
            "changed_at": watch.changed_at,
        }
        stmt = dialect_insert(self.dialect)(supplier_status).values(
            supplier_id=watch.supplier_id, **values
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[supplier_status.c.supplier_id], set_=values
        )
        await self.session.execute(stmt)
