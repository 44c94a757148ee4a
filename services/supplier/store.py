"""Supplier service unit of work and repositories (suppliers, offers, supplier orders)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.supplier.domain import Line, Offer, SupplierInfo, Track
from services.supplier.tables import (
    allocation,
    callback_delivery,
    metadata,
    offer,
    order_cancellation,
    routing_request,
    supplier,
    supplier_order,
    supplier_tally,
)
from shared.uow import UnitOfWork

__all__ = ["SupplierDirectory", "SupplierUnitOfWork", "metadata"]

ACTIVE_STATES = ("to_send", "sending", "received", "accepted", "backordered", "dispatched")
FAILED_STATES = ("rejected", "out_of_stock", "unavailable")
UNDECIDED_STATES = ("received", "backordered")
COUNTERS = ("decided", "accepted", "shipped", "shipped_on_time", "exceptions")
"""Placed at the supplier, waiting for its decision: checked on if no callback comes."""


def aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class Credentials:
    api_key: str
    webhook_secret: str


class Sealer:
    """Encrypts supplier credentials at rest (AES-GCM); the key comes from settings."""

    def __init__(self, seal: Callable[[str], str], unseal: Callable[[str], str]) -> None:
        self.seal, self.unseal = seal, unseal

    def dump(self, creds: Credentials) -> str:
        return self.seal(
            json.dumps({"api_key": creds.api_key, "webhook_secret": creds.webhook_secret})
        )

    def load(self, token: str | None) -> Credentials:
        data = json.loads(self.unseal(token)) if token else {}
        return Credentials(data.get("api_key", ""), data.get("webhook_secret", ""))


@dataclass(frozen=True)
class SupplierEntry:
    """What routing, the dispatcher and the webhooks need of a supplier, credentials unsealed."""

    id: str
    supplier_key: str
    api_base_url: str
    credentials: Credentials
    priority: int
    ship_sla_hours: float
    active: bool
    rate_limit_per_s: float | None
    track: Track

    @property
    def info(self) -> SupplierInfo:
        return SupplierInfo(self.id, self.active, self.priority, self.track)


class SupplierDirectory:
    """Supplier rows cached for `ttl_s` seconds, so hot paths do not read them per order.

    Changes made through this process's admin API invalidate the entry at once; other
    replicas see them within `ttl_s` (and the measured reliability lags by as much).
    """

    def __init__(self, sealer: Sealer, ttl_s: float = 2.0) -> None:
        self.sealer = sealer
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, SupplierEntry | None]] = {}

    def invalidate(self, supplier_id: str | None = None) -> None:
        if supplier_id is None:
            self._entries.clear()
        else:
            self._entries.pop(supplier_id, None)

    def cached(self, supplier_id: str) -> tuple[bool, SupplierEntry | None]:
        hit = self._entries.get(supplier_id)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    def remember(self, supplier_id: str, row: Any, counts: dict[str, int]) -> SupplierEntry | None:
        entry = None
        if row is not None:
            c = {k: counts.get(k, 0) for k in ("decided", "accepted", "shipped", "shipped_on_time")}
            entry = SupplierEntry(
                row.id,
                row.supplier_key,
                row.api_base_url,
                self.sealer.load(row.credentials),
                row.priority,
                float(row.ship_sla_hours),
                row.active,
                row.rate_limit_per_s,
                Track(c["decided"], c["accepted"], c["shipped"], c["shipped_on_time"]),
            )
        self._entries[supplier_id] = (time.monotonic() + self.ttl_s, entry)
        return entry


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
class _Tally:
    """Supplier counter increments, written last and in supplier order at commit (hot rows)."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, supplier_id: str, increments: dict[str, int]) -> None:
        self.counts.setdefault(supplier_id, Counter()).update(increments)


@dataclass(frozen=True, slots=True)
class _Allocation:
    line_id: str
    sku: str
    supplier_sku: str
    quantity: int
    unit_cost: Decimal
    currency: str


_SO_WITH_LINES = (
    select(
        supplier_order,
        allocation.c.line_id.label("a_line_id"),
        allocation.c.sku.label("a_sku"),
        allocation.c.supplier_sku.label("a_supplier_sku"),
        allocation.c.quantity.label("a_quantity"),
        allocation.c.unit_cost.label("a_unit_cost"),
        allocation.c.currency.label("a_currency"),
    )
    .outerjoin(allocation, allocation.c.supplier_order_id == supplier_order.c.id)
    .where(supplier_order.c.id == bindparam("so_id"))
    .order_by(allocation.c.id)
)


_MARK_RECEIVED = (
    update(supplier_order)
    .where(supplier_order.c.id == bindparam("so_id"), supplier_order.c.state == "sending")
    .values(
        state="received",
        supplier_order_ref=bindparam("ref"),
        sent_at=bindparam("sent"),
        lease_until=None,
        next_check_at=bindparam("check_at"),
    )
)


class StockConflict(Exception):
    """Stock read for planning was taken by a concurrent order; plan again."""


class SupplierUnitOfWork(UnitOfWork):
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: Callable[[], None] | None = None,
        notify_others: Callable[[], bool] = lambda: True,
        *,
        directory: SupplierDirectory,
        hand_off: Callable[[list[NewSupplierOrder]], None] = lambda _: None,
        wake_dispatcher: Callable[[], None] = lambda: None,
        lease: timedelta = timedelta(seconds=60),
        check_after: timedelta = timedelta(seconds=30),
    ) -> None:
        super().__init__(sessions, on_commit, notify_others)
        self.directory = directory
        self.sealer = directory.sealer
        self.lease = lease
        self.check_after = check_after
        self._hand_off = hand_off
        self._wake_dispatcher = wake_dispatcher
        self.work_queued = False
        self.new_orders: list[NewSupplierOrder] = []
        self._tally = _Tally()
        self._lines: dict[str, list[_Allocation]] = {}

    async def __aenter__(self) -> SupplierUnitOfWork:
        await super().__aenter__()
        self.work_queued = False
        self.new_orders = []
        self._tally = _Tally()
        self._lines = {}
        return self

    async def commit(self) -> None:
        if self._tally.counts:  # appended, not updated: the supplier row is not locked
            await self._run(
                supplier_tally.insert(),
                [
                    {**dict.fromkeys(COUNTERS, 0), **increments, "supplier_id": supplier_id}
                    for supplier_id, increments in sorted(self._tally.counts.items())
                ],
            )
        self._tally = _Tally()
        await super().commit()
        if self.new_orders:
            fresh, self.new_orders = self.new_orders, []
            self._hand_off(fresh)
        if self.work_queued:
            self._wake_dispatcher()

    async def rollback(self) -> None:
        self.new_orders = []
        self._tally = _Tally()
        await super().rollback()

    async def _run(self, statement: Any, params: Any = None) -> Any:
        """Execute on the transaction's connection: Core, without the ORM session's overhead."""
        conn = await self.session.connection()
        if params is None:
            return await conn.execute(statement)
        return await conn.execute(statement, params)

    async def _scalar(self, statement: Any) -> Any:
        return (await self._run(statement)).scalar()

    def _insert(self) -> Any:
        return (postgresql if self.dialect == "postgresql" else sqlite).insert

    # -- suppliers and offers -------------------------------------------------------------
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

    # -- routing requests -----------------------------------------------------------------
    async def add_request(self, values: dict[str, Any]) -> bool:
        result = await self._run(
            self._insert()(routing_request).values(**values).on_conflict_do_nothing()
        )
        return getattr(result, "rowcount", 0) == 1

    async def request(self, order_id: str, *, for_update: bool = False) -> Any:
        query = select(routing_request).where(routing_request.c.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        return (await self._run(query)).first()

    @staticmethod
    def lines_of(request: Any) -> list[Line]:
        return [
            Line(x["line_id"], x["sku"], int(x["quantity"]), Decimal(x["unit_price"]))
            for x in request.lines
        ]

    async def remember_cancellation(self, order_id: str, reason: str) -> None:
        now = datetime.now(UTC)
        await self._run(
            self._insert()(order_cancellation)
            .values(order_id=order_id, reason=reason[:500], cancelled_at=now)
            .on_conflict_do_nothing()
        )
        await self._run(
            update(routing_request)
            .where(routing_request.c.order_id == order_id, routing_request.c.cancelled_at.is_(None))
            .values(cancelled_at=now)
        )

    async def was_cancelled(self, order_id: str) -> bool:
        found = await self._scalar(
            select(order_cancellation.c.order_id).where(order_cancellation.c.order_id == order_id)
        )
        return found is not None

    async def received_orders(self) -> list[str]:
        rows = await self._run(
            select(routing_request.c.order_id).order_by(routing_request.c.received_at)
        )
        return [r.order_id for r in rows]

    # -- supplier orders ------------------------------------------------------------------
    async def add_supplier_orders(
        self,
        orders: list[dict[str, Any]],
        allocations: list[dict[str, Any]],
        sends: list[NewSupplierOrder],
    ) -> None:
        """New supplier orders, leased to this process and handed to its dispatcher at commit."""
        if not orders:
            return
        now = datetime.now(UTC)
        await self._run(
            supplier_order.insert(),
            [
                {**o, "state": "sending", "attempts": 1, "lease_until": now + self.lease}
                for o in orders
            ],
        )
        await self._run(allocation.insert(), allocations)
        self.new_orders += sends

    async def drop_supplier_orders(self, ids: list[str]) -> None:
        """Undo `add_supplier_orders` within this transaction (their stock was not had)."""
        if not ids:
            return
        await self._run(delete(allocation).where(allocation.c.supplier_order_id.in_(ids)))
        await self._run(delete(supplier_order).where(supplier_order.c.id.in_(ids)))
        self.new_orders = [o for o in self.new_orders if o.id not in ids]

    async def supplier_order(self, so_id: str, *, for_update: bool = False) -> Any:
        """The supplier order (locked with `for_update`), its allocations read in the same
        statement and kept for `allocations_of`."""
        query = _SO_WITH_LINES.with_for_update(of=supplier_order) if for_update else _SO_WITH_LINES
        rows = list(await self._run(query, {"so_id": so_id}))
        if not rows:
            return None
        self._lines[so_id] = [
            _Allocation(
                r.a_line_id, r.a_sku, r.a_supplier_sku, r.a_quantity, r.a_unit_cost, r.a_currency
            )
            for r in rows
            if r.a_line_id is not None
        ]
        return rows[0]

    async def by_tracking(self, tracking_number: str) -> Any:
        query = (
            select(supplier_order)
            .where(supplier_order.c.tracking_number == tracking_number)
            .with_for_update()
        )
        return (await self._run(query)).first()

    async def set_state(self, so_id: str, **values: Any) -> None:
        await self._run(update(supplier_order).where(supplier_order.c.id == so_id).values(**values))
        if values.get("state") in ("to_send", "cancel_pending"):
            self.work_queued = True

    async def mark_received(self, sent: list[tuple[str, str]]) -> None:
        """(supplier order id, supplier_order_ref) placed at the supplier, in one batch.

        Only orders still `sending` change: a callback or a cancel may have got there
        first. On PostgreSQL a row a callback holds locked is skipped rather than waited
        for (that callback is deciding it), so one slow callback cannot hold up the batch
        and every callback behind it.
        """
        if self.dialect == "postgresql" and sent:
            free = {
                r.id
                for r in await self._run(
                    select(supplier_order.c.id)
                    .where(
                        supplier_order.c.id.in_([so_id for so_id, _ in sent]),
                        supplier_order.c.state == "sending",
                    )
                    .with_for_update(skip_locked=True)
                )
            }
            sent = [(so_id, ref) for so_id, ref in sent if so_id in free]
        if not sent:
            return
        now = datetime.now(UTC)
        await self._run(
            _MARK_RECEIVED,
            [
                {"so_id": so_id, "ref": ref, "sent": now, "check_at": now + self.check_after}
                for so_id, ref in sent
            ],
        )

    async def orders_of(self, order_id: str) -> list[Any]:
        rows = await self._run(
            select(supplier_order)
            .where(supplier_order.c.order_id == order_id)
            .order_by(supplier_order.c.created_at)
        )
        return list(rows)

    async def allocations_of(self, so_id: str) -> list[Any]:
        if so_id in self._lines:
            return list(self._lines[so_id])
        return list(
            await self._run(select(allocation).where(allocation.c.supplier_order_id == so_id))
        )

    async def allocations_for_order(self, order_id: str) -> list[Any]:
        rows = await self._run(
            select(
                allocation,
                supplier_order.c.state,
                supplier_order.c.supplier_id,
                supplier_order.c.supplier_order_ref,
            )
            .join(supplier_order, supplier_order.c.id == allocation.c.supplier_order_id)
            .where(allocation.c.order_id == order_id)
            .order_by(allocation.c.id)
        )
        return list(rows)

    async def failed_suppliers_by_line(self, order_id: str) -> dict[str, frozenset[str]]:
        rows = await self._run(
            select(allocation.c.line_id, supplier_order.c.supplier_id)
            .join(supplier_order, supplier_order.c.id == allocation.c.supplier_order_id)
            .where(
                allocation.c.order_id == order_id,
                supplier_order.c.state.in_(
                    (*FAILED_STATES, "backordered", "cancel_pending", "cancelled")
                ),
            )
        )
        out: dict[str, set[str]] = {}
        for line_id, supplier_id in rows:
            out.setdefault(line_id, set()).add(supplier_id)
        return {k: frozenset(v) for k, v in out.items()}

    async def claim_work(self, states: tuple[str, ...], lease: timedelta, limit: int) -> list[Any]:
        """Take due work (rows in `states`, or whose lease expired) for this dispatcher."""
        now = datetime.now(UTC)
        query = (
            select(supplier_order)
            .where(
                or_(
                    supplier_order.c.state.in_(states)
                    & (
                        supplier_order.c.lease_until.is_(None)
                        | (supplier_order.c.lease_until < now)
                    ),
                    (supplier_order.c.state.in_(("sending", "cancelling")))
                    & (supplier_order.c.lease_until < now),
                )
            )
            .order_by(supplier_order.c.created_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list(await self._run(query))
        for row in rows:
            busy = "cancelling" if row.state in ("cancel_pending", "cancelling") else "sending"
            await self._run(
                update(supplier_order)
                .where(supplier_order.c.id == row.id)
                .values(state=busy, lease_until=now + lease, attempts=supplier_order.c.attempts + 1)
            )
        return rows

    async def due_checks(self, limit: int) -> list[Any]:
        """Take undecided supplier orders whose check is due, and push their next check back."""
        now = datetime.now(UTC)
        query = (
            select(supplier_order)
            .where(
                supplier_order.c.state.in_(UNDECIDED_STATES),
                supplier_order.c.next_check_at.is_not(None),
                supplier_order.c.next_check_at <= now,
            )
            .order_by(supplier_order.c.next_check_at)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = list(await self._run(query))
        if rows:
            await self._run(
                update(supplier_order)
                .where(supplier_order.c.id.in_([r.id for r in rows]))
                .values(next_check_at=now + self.check_after)
            )
        return rows

    async def sla_due(self, now: datetime, limit: int = 500) -> list[Any]:
        query = (
            select(supplier_order)
            .where(supplier_order.c.state == "accepted", supplier_order.c.major_sent.is_(False))
            .order_by(supplier_order.c.ship_by)
            .limit(limit)
        )
        if self.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        return list(await self._run(query))

    # -- webhooks -------------------------------------------------------------------------
    async def first_delivery(self, source: str, delivery_id: str) -> bool:
        stmt = (
            self._insert()(callback_delivery)
            .values(source=source, delivery_id=delivery_id, received_at=datetime.now(UTC))
            .on_conflict_do_nothing()
        )
        result = await self._run(stmt)
        return getattr(result, "rowcount", 0) == 1
