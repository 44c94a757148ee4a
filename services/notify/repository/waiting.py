"""Lines waiting for a supplier, watched so ops hear once when they wait too long."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.tables import waiting_watch
from shared.db import aware, dialect_insert

# `clear` runs for every confirmation: built once, for the order and for some of its lines.
_CLEAR_ORDER = delete(waiting_watch).where(waiting_watch.c.order_id == bindparam("p_order_id"))
_CLEAR_LINES = _CLEAR_ORDER.where(waiting_watch.c.line_id.in_(bindparam("p_lines", expanding=True)))
_CLEAR_LINE = _CLEAR_ORDER.where(waiting_watch.c.line_id == bindparam("p_line_id"))
"""One line's watch: the kept clears of a chunk in one executemany (`write_kept`)."""


class WaitingWatches:
    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect
        self._defer = False
        self._kept: dict[tuple[str, str], None] = {}
        """(order id, line id) watches `clear` was asked to drop, in order, unwritten."""

    def defer_writes(self) -> None:
        """From now on `clear` of some lines keeps them until `write_kept`; every other
        method of this repository writes them first."""
        self._defer = True

    async def write_kept(self) -> None:
        """Drop the kept watches, in one statement (an executemany)."""
        if self._kept:
            kept, self._kept = list(self._kept), {}
            rows = [{"p_order_id": order_id, "p_line_id": line_id} for order_id, line_id in kept]
            await self.session.execute(_CLEAR_LINE, rows)

    async def add(self, order_id: str, line_ids: list[str], since: datetime) -> None:
        await self.write_kept()
        for line_id in line_ids:
            await self.session.execute(
                dialect_insert(self.dialect)(waiting_watch)
                .values(order_id=order_id, line_id=line_id, since=since, alerted=False)
                .on_conflict_do_nothing()
            )

    async def clear(self, order_id: str, line_ids: list[str] | None = None) -> None:
        if line_ids is not None and self._defer:
            self._kept.update(dict.fromkeys((order_id, line_id) for line_id in line_ids))
            return
        await self.write_kept()
        if line_ids is None:
            await self.session.execute(_CLEAR_ORDER, {"p_order_id": order_id})
        else:
            await self.session.execute(_CLEAR_LINES, {"p_order_id": order_id, "p_lines": line_ids})

    async def overdue(self, cutoff: datetime) -> dict[str, tuple[list[str], datetime]]:
        """Orders with lines waiting since before `cutoff` not yet alerted on, marked now."""
        await self.write_kept()
        rows = (
            await self.session.execute(
                select(waiting_watch).where(
                    waiting_watch.c.since <= cutoff, waiting_watch.c.alerted.is_(False)
                )
            )
        ).all()
        out: dict[str, tuple[list[str], datetime]] = {}
        for r in rows:
            lines, since = out.get(r.order_id, ([], aware(r.since) or r.since))
            out[r.order_id] = ([*lines, r.line_id], min(since, aware(r.since) or r.since))
        for order_id, (lines, _) in out.items():
            await self.session.execute(
                update(waiting_watch)
                .where(waiting_watch.c.order_id == order_id, waiting_watch.c.line_id.in_(lines))
                .values(alerted=True)
            )
        return out
