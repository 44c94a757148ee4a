"""Metrics unit of work: facts and the inbox in one transaction, callbacks after it commits."""

from __future__ import annotations

from collections.abc import Callable

from services.metrics.aftersales_repository import AfterSalesRepository
from services.metrics.repository import AppliedEvents, FactRepository
from services.metrics.rollup_repository import RollupRepository
from services.metrics.tables import metadata
from shared.uow import UnitOfWork

__all__ = ["MetricsUnitOfWork", "metadata"]


class MetricsUnitOfWork(UnitOfWork):
    """The metrics service's transaction; `after_commit` callbacks run once it committed."""

    facts: FactRepository
    after_sales: AfterSalesRepository
    applied: AppliedEvents
    rollups: RollupRepository
    _after: list[Callable[[], None]]

    async def __aenter__(self) -> MetricsUnitOfWork:
        await super().__aenter__()
        session, dialect = self.session, self.dialect
        self.facts = FactRepository(session, dialect)
        self.after_sales = AfterSalesRepository(session, dialect)
        self.applied = AppliedEvents(session, dialect)
        self.rollups = RollupRepository(session, dialect)
        self._after = []
        return self

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after.append(callback)

    async def commit(self) -> None:
        await super().commit()
        callbacks, self._after = self._after, []
        for callback in callbacks:
            callback()
