"""What the supplier repositories share: Core SQL on the transaction, and the commit hand-offs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Executable
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import dialect_insert


@dataclass(frozen=True)
class NewSupplierOrder:
    """A supplier order committed as `sending` under this process's lease: the dispatcher
    places it straight from memory (no claim round trip); if this process dies, the lease
    expires and any replica sends it again with the same idempotency key."""

    id: str
    order_id: str
    supplier_id: str
    lines: tuple[tuple[str, int], ...]  # (supplier_sku, quantity)
    ship_country: str
    ship_postal_code: str


@dataclass
class AfterCommit:
    """What one transaction hands on: supplier counter increments (written last, appended,
    in supplier order: those rows are hot), new orders for this process's dispatcher, and
    whether the dispatcher, or the clock of waiting lines, has work to wake up for, and
    which suppliers' cached entries to drop (their ranking changed)."""

    tally: dict[str, Counter[str]] = field(default_factory=dict)
    new_orders: list[NewSupplierOrder] = field(default_factory=list)
    wake_dispatcher: bool = False
    wake_waiting: bool = False
    forget: set[str] = field(default_factory=set)

    def count(self, supplier_id: str, increments: Counter[str]) -> None:
        if increments:
            self.tally.setdefault(supplier_id, Counter()).update(increments)

    def take(self) -> AfterCommit:
        """Everything recorded so far, leaving this empty (the repositories keep using it)."""
        taken = AfterCommit(
            self.tally, self.new_orders, self.wake_dispatcher, self.wake_waiting, self.forget
        )
        self.tally, self.new_orders, self.wake_dispatcher, self.wake_waiting = {}, [], False, False
        self.forget = set()
        return taken


class StockConflict(Exception):
    """Stock read for planning was taken by a concurrent order; plan again."""


_PREBUILT: dict[tuple[str, str], Any] = {}


class Sql:
    """Core statements on the transaction's connection, without the ORM session's overhead.

    Hot statements are built once (`prebuilt`) with bound parameters: a statement object
    used again keeps its cache key, so SQLAlchemy neither rebuilds nor re-keys it.
    """

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect
        self._held: Callable[[], Awaitable[None]] | None = None

    def hold(self, write: Callable[[], Awaitable[None]]) -> None:
        """`write` (writes held back to be sent together) runs before the next statement
        of this transaction, whichever repository sends it, or at `flush`: nothing reads
        past it."""
        self._held = write

    async def flush(self) -> None:
        """Send the writes held back, if any (the unit of work, before it commits)."""
        if self._held is not None:
            write, self._held = self._held, None
            await write()

    async def run(self, statement: Executable, params: Any = None) -> CursorResult[Any]:
        if self._held is not None:
            await self.flush()
        conn = await self.session.connection()
        if params is None:
            return await conn.execute(statement)
        return await conn.execute(statement, params)

    async def scalar(self, statement: Executable) -> Any:
        return (await self.run(statement)).scalar()

    def insert(self) -> Any:
        """The dialect's `insert` (with `on_conflict_do_nothing` / `_do_update`)."""
        return dialect_insert(self.dialect)

    def prebuilt(self, name: str, build: Callable[[Any], Executable]) -> Any:
        """The statement `build(insert of this dialect)` makes, built once per dialect."""
        key = (self.dialect, name)
        found = _PREBUILT.get(key)
        if found is None:
            found = _PREBUILT[key] = build(self.insert())
        return found


def rowcount(result: CursorResult[Any]) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
