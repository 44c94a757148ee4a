"""Suppliers, offers and stock, supplier counters: the catalogue side of the unit of work."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, func, select, update

from services.supplier.directory import SupplierEntry
from services.supplier.domain import Offer, SupplierInfo
from services.supplier.store.base import COUNTERS, StockConflict, UnitOfWorkBase
from services.supplier.tables import (
    offer,
    supplier,
    supplier_tally,
)


class CatalogueRepository(UnitOfWorkBase):
    async def supplier_row(self, supplier_id: str) -> Any:
        return (await self._run(select(supplier).where(supplier.c.id == supplier_id))).first()

    async def supplier(self, supplier_id: str) -> SupplierEntry | None:
        """The supplier from the directory cache, read (in this transaction) on a miss."""
        return (await self.suppliers({supplier_id})).get(supplier_id)

    async def suppliers(self, ids: Iterable[str]) -> dict[str, SupplierEntry]:
        found: dict[str, SupplierEntry] = {}
        missing: set[str] = set()
        for supplier_id in set(ids):
            hit, entry = self.directory.cached(supplier_id)
            if not hit:
                missing.add(supplier_id)
            elif entry is not None:
                found[supplier_id] = entry
        if missing:
            rows = {
                r.id: r for r in await self._run(select(supplier).where(supplier.c.id.in_(missing)))
            }
            counts = await self.counters(rows)
            for supplier_id in missing:
                entry = self.directory.remember(
                    supplier_id, rows.get(supplier_id), counts.get(supplier_id, {})
                )
                if entry is not None:
                    found[supplier_id] = entry
        return found

    async def supplier_infos(self, ids: set[str]) -> dict[str, SupplierInfo]:
        return {k: v.info for k, v in (await self.suppliers(ids)).items()}

    async def upsert_offers(self, rows: list[tuple[str, dict[str, Any]]]) -> None:
        """Insert or replace offers by (supplier_id, sku); `values` are the offer's columns."""
        now = datetime.now(UTC)
        for supplier_id, values in rows:
            changes = {**{k: v for k, v in values.items() if k != "sku"}, "updated_at": now}
            stmt = self._insert()(offer).values(
                supplier_id=supplier_id, sku=values["sku"], **changes
            )
            await self._run(
                stmt.on_conflict_do_update(
                    index_elements=[offer.c.supplier_id, offer.c.sku], set_=changes
                )
            )

    async def offers_for(self, skus: set[str], currency: str) -> list[Offer]:
        rows = await self._run(
            select(offer).where(offer.c.sku.in_(skus), offer.c.currency == currency)
        )
        return [
            Offer(
                r.supplier_id,
                r.sku,
                r.supplier_sku,
                Decimal(r.unit_cost),
                r.currency,
                r.stock,
                r.lead_time_hours,
            )
            for r in rows
        ]

    async def move_stock(
        self,
        *,
        take: Iterable[tuple[str, str, int]] = (),
        give: Iterable[tuple[str, str, int]] = (),
        empty: Iterable[tuple[str, str]] = (),
    ) -> None:
        """Reserve (`take`), release (`give`) and zero (`empty`) offer stock in one pass.

        Offer rows are hot, so every change of one transaction is applied here, in one
        global (supplier, sku) order: two transactions can never lock them crosswise. A
        reservation only succeeds if enough is left; otherwise what this call already
        changed is undone and `StockConflict` is raised, so two orders racing for the
        last units can never both get them.
        """
        delta: Counter[tuple[str, str]] = Counter()
        for supplier_id, sku, quantity in take:
            delta[(supplier_id, sku)] -= quantity
        for supplier_id, sku, quantity in give:
            delta[(supplier_id, sku)] += quantity
        zero = set(empty)
        done: list[tuple[tuple[str, str], int]] = []
        for key in sorted(set(delta) | zero):
            where = (offer.c.supplier_id == key[0], offer.c.sku == key[1])
            if key in zero:
                await self._run(update(offer).where(*where).values(stock=0))
                continue
            change = delta[key]
            if change == 0:
                continue
            stmt = update(offer).where(*where)
            if change < 0:
                stmt = stmt.where(offer.c.stock >= -change)
            result = await self._run(stmt.values(stock=offer.c.stock + change))
            if change < 0 and getattr(result, "rowcount", 0) != 1:
                for (supplier_id, sku), undo in done:
                    await self._run(
                        update(offer)
                        .where(offer.c.supplier_id == supplier_id, offer.c.sku == sku)
                        .values(stock=offer.c.stock - undo)
                    )
                raise StockConflict(f"{key[0]}/{key[1]}")
            done.append((key, change))

    def count(self, supplier_id: str, **increments: int) -> None:
        """Add to a supplier's counters; appended to `supplier_tally` at commit."""
        self._tally.add(supplier_id, increments)

    async def counters(self, ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """Suppliers' counters: their row plus the tallies not yet folded into it."""
        wanted = list(set(ids))
        rows = await self._run(
            select(supplier.c.id, *(supplier.c[k] for k in COUNTERS)).where(
                supplier.c.id.in_(wanted)
            )
        )
        out = {r.id: {k: int(getattr(r, k)) for k in COUNTERS} for r in rows}
        pending = await self._run(
            select(
                supplier_tally.c.supplier_id,
                *(func.sum(supplier_tally.c[k]).label(k) for k in COUNTERS),
            )
            .where(supplier_tally.c.supplier_id.in_(wanted))
            .group_by(supplier_tally.c.supplier_id)
        )
        for r in pending:
            if r.supplier_id in out:
                for k in COUNTERS:
                    out[r.supplier_id][k] += int(getattr(r, k) or 0)
        return out

    async def fold_tallies(self, limit: int = 5000) -> int:
        """Move appended tallies into the suppliers' counters; returns how many were folded.

        `DELETE … RETURNING` takes exactly the rows it adds up, so a tally committed
        meanwhile is neither lost nor counted twice.
        """
        last = await self._scalar(
            select(supplier_tally.c.id).order_by(supplier_tally.c.id).offset(limit - 1).limit(1)
        ) or await self._scalar(select(func.max(supplier_tally.c.id)))
        if last is None:
            return 0
        taken = list(
            await self._run(
                delete(supplier_tally)
                .where(supplier_tally.c.id <= last)
                .returning(supplier_tally.c.supplier_id, *(supplier_tally.c[k] for k in COUNTERS))
            )
        )
        sums: dict[str, Counter[str]] = {}
        for r in taken:
            sums.setdefault(r.supplier_id, Counter()).update(
                {k: int(getattr(r, k) or 0) for k in COUNTERS}
            )
        for supplier_id in sorted(sums):
            await self._run(
                update(supplier)
                .where(supplier.c.id == supplier_id)
                .values({supplier.c[k]: supplier.c[k] + v for k, v in sums[supplier_id].items()})
            )
        return len(taken)
