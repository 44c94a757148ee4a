"""Suppliers (cached for hot paths, counters appended as tallies) and offers with their stock."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, delete, func, select, update

from services.supplier.directory import Sealer, SupplierDirectory, SupplierEntry
from services.supplier.domain import (
    COUNTERS,
    NewSupplier,
    Offer,
    Supplier,
    SupplierChanges,
    SupplierInfo,
)
from services.supplier.domain.routing_policy import MISS_HALF_LIFE, decayed
from services.supplier.store.base import Sql, StockConflict, rowcount
from services.supplier.store.quality import defective_orders
from services.supplier.tables import (
    offer,
    offer_external_id,
    supplier,
    supplier_mark,
    supplier_tally,
)
from shared.db import aware

_APPEND_TALLY = supplier_tally.insert()


class SupplierRepository:
    def __init__(self, sql: Sql, directory: SupplierDirectory) -> None:
        self._sql = sql
        self.directory = directory
        self.sealer: Sealer = directory.sealer

    # -- the admin view ---------------------------------------------------------------
    async def get(self, supplier_id: str) -> Supplier | None:
        row = (await self._sql.run(select(supplier).where(supplier.c.id == supplier_id))).first()
        return _supplier(row) if row is not None else None

    async def list(self) -> list[Supplier]:
        rows = await self._sql.run(select(supplier).order_by(supplier.c.priority, supplier.c.id))
        return [_supplier(r) for r in rows]

    async def ids(self) -> set[str]:
        return {r.id for r in await self._sql.run(select(supplier.c.id))}

    async def id_for_key(self, supplier_key: str) -> str | None:
        found = await self._sql.scalar(
            select(supplier.c.id).where(supplier.c.supplier_key == supplier_key)
        )
        return str(found) if found is not None else None

    async def reseal_stale(self) -> int:
        """Seal again, under the active key, every credential sealed under an older one;
        returns how many suppliers changed (a concurrent edit wins: compare-and-set)."""
        changed = 0
        for row in await self._sql.run(select(supplier.c.id, supplier.c.credentials)):
            fresh = self.sealer.resealed(row.credentials) if row.credentials else None
            if fresh is None:
                continue
            done = await self._sql.run(
                update(supplier)
                .where(supplier.c.id == row.id, supplier.c.credentials == row.credentials)
                .values(credentials=fresh)
            )
            changed += rowcount(done)
        return changed

    async def count_stale(self) -> int:
        """Suppliers whose credentials are sealed under a key other than the active one."""
        rows = await self._sql.run(select(supplier.c.credentials))
        return sum(1 for r in rows if r.credentials and self.sealer.stale(r.credentials))

    async def add(self, supplier_id: str, new: NewSupplier, now: datetime) -> None:
        await self._sql.run(
            supplier.insert().values(
                id=supplier_id,
                supplier_key=new.supplier_key,
                name=new.name,
                api_base_url=new.api_base_url,
                credentials=self.sealer.dump(new.credentials),
                priority=new.priority,
                ship_sla_hours=new.ship_sla_hours,
                active=new.active,
                rate_limit_per_s=new.rate_limit_per_s,
                **dict.fromkeys(COUNTERS, 0),
                created_at=now,
                updated_at=now,
            )
        )

    async def change(self, supplier_id: str, changes: SupplierChanges, now: datetime) -> None:
        values: dict[str, Any] = {f: getattr(changes, f) for f in changes.fields}
        if changes.credentials is not None:
            values["credentials"] = self.sealer.dump(changes.credentials)
        if values:
            await self._sql.run(
                update(supplier)
                .where(supplier.c.id == supplier_id)
                .values(**values, updated_at=now)
            )

    def forget(self, supplier_id: str) -> None:
        """Drop the cached entry (call once the change is committed)."""
        self.directory.invalidate(supplier_id)

    # -- the hot paths: cached entries ------------------------------------------------
    async def entry(self, supplier_id: str) -> SupplierEntry | None:
        """The supplier from the directory cache, read (in this transaction) on a miss."""
        return (await self.entries({supplier_id})).get(supplier_id)

    async def entries(self, ids: Iterable[str]) -> dict[str, SupplierEntry]:
        found: dict[str, SupplierEntry] = {}
        missing: set[str] = set()
        for supplier_id in set(ids):
            hit, entry = self.directory.cached(supplier_id)
            if not hit:
                missing.add(supplier_id)
            elif entry is not None:
                found[supplier_id] = entry
        if missing:
            generation = self.directory.generation
            rows = {
                r.id: r
                for r in await self._sql.run(select(supplier).where(supplier.c.id.in_(missing)))
            }
            counts = await self.counters(rows)
            penalties = await self.penalties(set(rows))
            defects = await defective_orders(self._sql, rows)
            for supplier_id in missing:
                entry = self.directory.remember(
                    supplier_id,
                    rows.get(supplier_id),
                    counts.get(supplier_id, {}),
                    penalties.get(supplier_id, 0.0),
                    defects.get(supplier_id, 0),
                    generation,
                )
                if entry is not None:
                    found[supplier_id] = entry
        return found

    async def infos(self, ids: set[str]) -> dict[str, SupplierInfo]:
        return {k: v.info for k, v in (await self.entries(ids)).items()}

    # -- counters ---------------------------------------------------------------------
    async def counters(self, ids: Iterable[str]) -> dict[str, dict[str, int]]:
        """Suppliers' counters: their row plus the tallies not yet folded into it."""
        wanted = list(set(ids))
        rows = await self._sql.run(
            select(supplier.c.id, *(supplier.c[k] for k in COUNTERS)).where(
                supplier.c.id.in_(wanted)
            )
        )
        out = {r.id: {k: int(getattr(r, k)) for k in COUNTERS} for r in rows}
        pending = await self._sql.run(
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

    async def mark(self, supplier_id: str, kind: str, at: datetime) -> None:
        """A miss (deadline, lost parcel) counted against the supplier's reliability."""
        await self._sql.run(
            supplier_mark.insert().values(supplier_id=supplier_id, kind=kind, at=at)
        )

    async def penalties(self, ids: set[str], now: datetime | None = None) -> dict[str, float]:
        """Each supplier's misses, weighted by age (see `routing_policy.decayed`)."""
        if not ids:
            return {}
        now = now or datetime.now(UTC)
        horizon = now - MISS_HALF_LIFE * 10  # older misses weigh under 0.1 %
        rows = await self._sql.run(
            select(supplier_mark.c.supplier_id, supplier_mark.c.at).where(
                supplier_mark.c.supplier_id.in_(ids), supplier_mark.c.at >= horizon
            )
        )
        ages: dict[str, list[timedelta]] = {}
        for r in rows:
            ages.setdefault(r.supplier_id, []).append(now - (aware(r.at) or now))
        return {k: decayed(v) for k, v in ages.items()}

    async def append_tallies(self, tally: dict[str, Counter[str]]) -> None:
        """Counter increments appended, not updated: the supplier rows are not locked."""
        if tally:
            await self._sql.run(
                _APPEND_TALLY,
                [
                    {**dict.fromkeys(COUNTERS, 0), **increments, "supplier_id": supplier_id}
                    for supplier_id, increments in sorted(tally.items())
                ],
            )

    async def fold_tallies(self, limit: int = 5000) -> int:
        """Move appended tallies into the suppliers' counters; returns how many were folded.

        `DELETE … RETURNING` takes exactly the rows it adds up, so a tally committed
        meanwhile is neither lost nor counted twice.
        """
        last = await self._sql.scalar(
            select(supplier_tally.c.id).order_by(supplier_tally.c.id).offset(limit - 1).limit(1)
        ) or await self._sql.scalar(select(func.max(supplier_tally.c.id)))
        if last is None:
            return 0
        taken = list(
            await self._sql.run(
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
            await self._sql.run(
                update(supplier)
                .where(supplier.c.id == supplier_id)
                .values({supplier.c[k]: supplier.c[k] + v for k, v in sums[supplier_id].items()})
            )
        return len(taken)


def _supplier(row: Row[Any]) -> Supplier:
    created = aware(row.created_at)
    assert created is not None
    return Supplier(
        id=row.id,
        supplier_key=row.supplier_key,
        name=row.name,
        api_base_url=row.api_base_url,
        priority=row.priority,
        ship_sla_hours=row.ship_sla_hours,
        active=row.active,
        rate_limit_per_s=row.rate_limit_per_s,
        has_credentials=bool(row.credentials),
        created_at=created,
    )


def _offer(row: Row[Any], external_ids: tuple[str, ...] | None = None) -> Offer:
    return Offer(
        row.supplier_id,
        row.sku,
        row.supplier_sku,
        Decimal(row.unit_cost),
        row.currency,
        row.stock,
        row.lead_time_hours,
        external_ids,
    )


# Stock moves and offer reads run in every routing transaction: built once, executed
# with parameters (an IN list is one expanding parameter).
_OFFER_KEY = (
    offer.c.supplier_id == bindparam("p_supplier_id"),
    offer.c.sku == bindparam("p_sku"),
)
_STOCK_EMPTY = update(offer).where(*_OFFER_KEY).values(stock=0)
_STOCK_GIVE = update(offer).where(*_OFFER_KEY).values(stock=offer.c.stock + bindparam("p_change"))
_STOCK_TAKE = _STOCK_GIVE.where(offer.c.stock + bindparam("p_change") >= 0)  # enough left
_IN_CURRENCIES = (
    select(offer)
    .where(
        offer.c.sku.in_(bindparam("p_skus", expanding=True)),
        offer.c.currency.in_(bindparam("p_currencies", expanding=True)),
    )
    .order_by(offer.c.supplier_id, offer.c.sku)
)


class OfferRepository:
    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    async def upsert(self, offers: Iterable[Offer]) -> None:
        """Insert or replace offers by (supplier_id, sku)."""
        now = datetime.now(UTC)
        for o in offers:
            changes = {
                "supplier_sku": o.supplier_sku,
                "unit_cost": o.unit_cost,
                "currency": o.currency,
                "stock": o.stock,
                "lead_time_hours": o.lead_time_hours,
                "updated_at": now,
            }
            stmt = self._sql.insert()(offer).values(supplier_id=o.supplier_id, sku=o.sku, **changes)
            await self._sql.run(
                stmt.on_conflict_do_update(
                    index_elements=[offer.c.supplier_id, offer.c.sku], set_=changes
                )
            )
            if o.external_ids is not None:  # given: they replace the offer's mapping
                await self._map(o.supplier_id, o.sku, o.external_ids)

    async def _map(self, supplier_id: str, sku: str, external_ids: Iterable[str]) -> None:
        t = offer_external_id.c
        await self._sql.run(
            delete(offer_external_id).where(t.supplier_id == supplier_id, t.sku == sku)
        )
        rows = [{"supplier_id": supplier_id, "sku": sku, "external_id": e} for e in external_ids]
        if rows:
            await self._sql.run(offer_external_id.insert(), rows)

    async def mapped_skus(self, external_ids: set[str], currency: str) -> dict[str, str]:
        """Which SKU each marketplace id maps to, among offers in `currency` (the lowest SKU
        when offers disagree)."""
        if not external_ids:
            return {}
        t = offer_external_id.c
        rows = await self._sql.run(
            select(t.external_id, func.min(t.sku).label("sku"))
            .join(offer, (offer.c.supplier_id == t.supplier_id) & (offer.c.sku == t.sku))
            .where(t.external_id.in_(external_ids), offer.c.currency == currency)
            .group_by(t.external_id)
        )
        return {r.external_id: r.sku for r in rows}

    async def for_skus(self, skus: set[str], currency: str) -> list[Offer]:
        return await self.in_currencies(skus, {currency})

    async def in_currencies(self, skus: set[str], currencies: set[str]) -> list[Offer]:
        """Offers of these SKUs quoted in any of these currencies, in (supplier, sku) order."""
        rows = await self._sql.run(
            _IN_CURRENCIES, {"p_skus": sorted(skus), "p_currencies": sorted(currencies)}
        )
        return [_offer(r) for r in rows]

    async def of_supplier(self, supplier_id: str) -> list[Offer]:
        rows = await self._sql.run(
            select(offer).where(offer.c.supplier_id == supplier_id).order_by(offer.c.sku)
        )
        t = offer_external_id.c
        mapped: dict[str, list[str]] = {}
        for m in await self._sql.run(
            select(t.sku, t.external_id)
            .where(t.supplier_id == supplier_id)
            .order_by(t.sku, t.external_id)
        ):
            mapped.setdefault(m.sku, []).append(m.external_id)
        return [_offer(r, tuple(mapped.get(r.sku, ()))) for r in rows]

    async def delete(self, supplier_id: str, sku: str) -> bool:
        result = await self._sql.run(
            delete(offer).where(offer.c.supplier_id == supplier_id, offer.c.sku == sku)
        )
        await self._map(supplier_id, sku, ())
        return rowcount(result) > 0

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
            at = {"p_supplier_id": key[0], "p_sku": key[1]}
            if key in zero:
                await self._sql.run(_STOCK_EMPTY, at)
                continue
            change = delta[key]
            if change == 0:
                continue
            stmt = _STOCK_TAKE if change < 0 else _STOCK_GIVE
            result = await self._sql.run(stmt, {**at, "p_change": change})
            if change < 0 and rowcount(result) != 1:
                for (supplier_id, sku), undo in done:
                    await self._sql.run(
                        _STOCK_GIVE, {"p_supplier_id": supplier_id, "p_sku": sku, "p_change": -undo}
                    )
                raise StockConflict(f"{key[0]}/{key[1]}")
            done.append((key, change))
