"""Returns and chargebacks against suppliers, each recorded once (by return and by refund id)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, and_, distinct, func, or_, select

from services.supplier.domain.quality import (
    Chargeback,
    ChargebackTally,
    QualityTally,
    SupplierReturn,
)
from services.supplier.store.base import Sql, rowcount
from services.supplier.tables import supplier_chargeback, supplier_return
from shared.db import aware


def _chargeback(row: Row[Any]) -> Chargeback:
    return Chargeback(
        refund_id=row.refund_id,
        supplier_id=row.supplier_id,
        order_id=row.order_id,
        return_id=row.return_id,
        amount=Decimal(row.amount).normalize() if row.amount is not None else Decimal(0),
        currency=row.currency,
        reason=row.reason,
        issued_at=aware(row.issued_at) or row.issued_at,
    )


async def defective_orders(sql: Sql, ids: Iterable[str]) -> dict[str, int]:
    """Per supplier, the orders returned for a quality defect (what routing ranks by)."""
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = await sql.run(
        select(
            supplier_return.c.supplier_id,
            func.count(distinct(supplier_return.c.order_id)).label("orders"),
        )
        .where(supplier_return.c.supplier_id.in_(wanted), supplier_return.c.defect.is_(True))
        .group_by(supplier_return.c.supplier_id)
    )
    return {r.supplier_id: int(r.orders) for r in rows}


class QualityRepository:
    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    async def record_return(self, part: SupplierReturn) -> bool:
        """False when this return was counted for this supplier before."""
        result = await self._sql.run(
            self._sql.insert()(supplier_return)
            .values(
                return_id=part.return_id,
                supplier_id=part.supplier_id,
                order_id=part.order_id,
                reason=part.reason,
                units=part.units,
                defect=part.defect,
                authorized_at=part.authorized_at,
            )
            .on_conflict_do_nothing()
        )
        return rowcount(result) == 1

    async def record_chargeback(self, charge: Chargeback, now: datetime) -> bool:
        """False when this refund was charged back before."""
        result = await self._sql.run(
            self._sql.insert()(supplier_chargeback)
            .values(
                refund_id=charge.refund_id,
                supplier_id=charge.supplier_id,
                order_id=charge.order_id,
                return_id=charge.return_id,
                amount=charge.amount,
                currency=charge.currency,
                reason=charge.reason,
                issued_at=charge.issued_at,
                recorded_at=now,
            )
            .on_conflict_do_nothing()
        )
        return rowcount(result) == 1

    async def tally(self, supplier_id: str) -> QualityTally:
        mine = supplier_return.c.supplier_id == supplier_id
        defect = supplier_return.c.defect.is_(True)
        counted = (
            func.count(distinct(supplier_return.c.return_id)).label("returns"),
            func.count(distinct(supplier_return.c.order_id)).label("orders"),
            func.coalesce(func.sum(supplier_return.c.units), 0).label("units"),
        )
        every = (await self._sql.run(select(*counted).where(mine))).one()
        defects = (await self._sql.run(select(*counted).where(mine, defect))).one()
        return QualityTally(
            returns=int(every.returns),
            returned_units=int(every.units),
            defective_orders=int(defects.orders),
            defective_units=int(defects.units),
        )

    async def chargeback_tally(self, supplier_id: str) -> ChargebackTally:
        """Count and exact totals per currency (summed here: SQLite has no exact decimals)."""
        rows = await self._sql.run(
            select(supplier_chargeback.c.amount, supplier_chargeback.c.currency).where(
                supplier_chargeback.c.supplier_id == supplier_id
            )
        )
        totals: dict[str, Decimal] = {}
        count = 0
        for row in rows:
            count += 1
            totals[row.currency] = totals.get(row.currency, Decimal(0)) + Decimal(str(row.amount))
        return ChargebackTally(count, totals)

    async def chargebacks(
        self, supplier_id: str, limit: int, after: tuple[datetime, str] | None = None
    ) -> list[Chargeback]:
        """Newest first; `after` is the (issued_at, refund_id) of the last one already seen."""
        query = select(supplier_chargeback).where(supplier_chargeback.c.supplier_id == supplier_id)
        if after is not None:
            at, refund_id = after
            query = query.where(
                or_(
                    supplier_chargeback.c.issued_at < at,
                    and_(
                        supplier_chargeback.c.issued_at == at,
                        supplier_chargeback.c.refund_id < refund_id,
                    ),
                )
            )
        query = query.order_by(
            supplier_chargeback.c.issued_at.desc(), supplier_chargeback.c.refund_id.desc()
        ).limit(limit)
        return [_chargeback(row) for row in await self._sql.run(query)]
