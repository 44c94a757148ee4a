"""An in-memory supplier unit of work: the repositories the handlers use, with no I/O."""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any

from services.supplier.directory import SupplierEntry
from services.supplier.domain import (
    CALLED_OFF_LATE,
    PASSED_OVER,
    Action,
    Credentials,
    Offer,
    RoutingRequest,
    State,
    Supplier,
    SupplierInfo,
    SupplierOrder,
    Track,
)
from services.supplier.store import TRACKING, NewSupplierOrder, StockConflict, WaitingLine
from shared.events import EventData


class FakeSupplierOrders:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self.uow = uow
        self.rows: dict[str, SupplierOrder] = {}

    def _copy(self, so: SupplierOrder) -> SupplierOrder:
        return copy.deepcopy(so)

    async def get(self, so_id: str, *, for_update: bool = False) -> SupplierOrder | None:
        so = self.rows.get(so_id)
        return self._copy(so) if so is not None else None

    async def get_once(
        self, so_id: str, source: str, delivery_id: str
    ) -> tuple[bool, SupplierOrder | None]:
        if not await self.uow.deliveries.first(source, delivery_id):
            return False, None
        return True, await self.get(so_id, for_update=True)

    async def by_tracking_once(
        self, tracking_number: str, source: str, delivery_id: str
    ) -> tuple[bool, SupplierOrder | None]:
        if not await self.uow.deliveries.first(source, delivery_id):
            return False, None
        return True, await self.by_tracking(tracking_number)

    def lines_may_wait(self, so: SupplierOrder) -> bool:
        return True  # the fake waiting lines are cleared as before

    def defer_saves(self) -> None:
        """Saves are kept in memory here: held back or not, the rows read the same."""

    async def by_tracking(self, tracking_number: str) -> SupplierOrder | None:
        found = [so for so in self.rows.values() if so.tracking_number == tracking_number]
        return self._copy(found[0]) if found else None

    async def of_order(self, order_id: str) -> list[SupplierOrder]:
        return [self._copy(so) for so in self.rows.values() if so.order_id == order_id]

    async def add_all(self, orders: list[SupplierOrder]) -> None:
        for so in orders:
            self.rows[so.id] = self._copy(so)

    async def remove(self, ids: list[str]) -> None:
        for so_id in ids:
            self.rows.pop(so_id, None)

    async def save(self, so: SupplierOrder) -> None:
        for event in so.events:
            self.uow.emit(event)
        so.events.clear()
        self.uow.tally.setdefault(so.supplier_id, Counter()).update(so.tally)
        so.tally.clear()
        self.rows[so.id] = self._copy(so)

    async def passed_over(
        self, order_id: str, states: frozenset[State] = PASSED_OVER, *, for_good: bool = False
    ) -> dict[str, frozenset[str]]:
        out: dict[str, set[str]] = {}
        for so in self.rows.values():
            if for_good and so.failure == CALLED_OFF_LATE:
                continue
            if so.order_id == order_id and so.state in states:
                for a in so.lines:
                    out.setdefault(a.line_id, set()).add(so.supplier_id)
        return {k: frozenset(v) for k, v in out.items()}

    async def sla_due(
        self, limit: int = 500, after: tuple[datetime, str] | None = None
    ) -> list[SupplierOrder]:
        due = sorted(
            (so for so in self.rows.values() if so.can(Action.CHECK_SLA) and not so.major_sent),
            key=lambda so: (so.ship_by, so.id),
        )
        if after is not None:
            due = [so for so in due if so.ship_by is not None and (so.ship_by, so.id) > after]
        return [self._copy(so) for so in due[:limit]]

    def in_state(self, order_id: str, state: State) -> list[SupplierOrder]:
        return [so for so in self.rows.values() if so.order_id == order_id and so.state is state]


class FakeOffers:
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], Offer] = {}

    def stock(self, supplier_id: str, sku: str) -> int:
        return self.rows[(supplier_id, sku)].stock

    async def upsert(self, offers: list[Offer]) -> None:
        for o in offers:
            self.rows[(o.supplier_id, o.sku)] = o

    async def for_skus(self, skus: set[str], currency: str) -> list[Offer]:
        return [o for o in self.rows.values() if o.sku in skus and o.currency == currency]

    async def in_currencies(self, skus: set[str], currencies: set[str]) -> list[Offer]:
        return [o for o in self.rows.values() if o.sku in skus and o.currency in currencies]

    async def mapped_skus(self, external_ids: set[str], currency: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for o in sorted(self.rows.values(), key=lambda o: o.sku, reverse=True):
            for e in o.external_ids or ():
                if e in external_ids and o.currency == currency:
                    found[e] = o.sku
        return found

    async def move_stock(
        self,
        *,
        take: Any = (),
        give: Any = (),
        empty: Any = (),
    ) -> None:
        delta: Counter[tuple[str, str]] = Counter()
        for supplier_id, sku, quantity in take:
            delta[(supplier_id, sku)] -= quantity
        for supplier_id, sku, quantity in give:
            delta[(supplier_id, sku)] += quantity
        for key, change in delta.items():
            if self.rows[key].stock + change < 0:
                raise StockConflict(f"{key}")
        for key, change in delta.items():
            self.rows[key] = replace(self.rows[key], stock=self.rows[key].stock + change)
        for key in empty:
            self.rows[key] = replace(self.rows[key], stock=0)


def entry(supplier_id: str, *, sla: float = 48.0, priority: int = 5) -> SupplierEntry:
    return SupplierEntry(
        supplier_id,
        supplier_id,
        f"http://sim/{supplier_id}",
        Credentials("key", "secret-123"),
        priority,
        sla,
        True,
        None,
        Track(),
    )


class FakeSuppliers:
    def __init__(self) -> None:
        self.entries_by_id: dict[str, SupplierEntry] = {}
        self.marks: list[tuple[str, str, datetime]] = []

    async def entry(self, supplier_id: str) -> SupplierEntry | None:
        return self.entries_by_id.get(supplier_id)

    async def infos(self, ids: set[str]) -> dict[str, SupplierInfo]:
        return {k: v.info for k, v in self.entries_by_id.items() if k in ids}

    async def ids(self) -> set[str]:
        return set(self.entries_by_id)

    async def get(self, supplier_id: str) -> Supplier | None:
        return None

    async def mark(self, supplier_id: str, kind: str, at: datetime) -> None:
        self.marks.append((supplier_id, kind, at))


class FakeRoutingRequests:
    def __init__(self) -> None:
        self.rows: dict[str, RoutingRequest] = {}
        self.cancelled: set[str] = set()

    async def add(self, request: RoutingRequest) -> bool:
        if request.order_id in self.rows:
            return False
        self.rows[request.order_id] = request
        return True

    async def add_many(self, requests: list[RoutingRequest]) -> set[str]:
        return {r.order_id for r in requests if await self.add(r)}

    async def get(self, order_id: str, *, for_update: bool = False) -> RoutingRequest | None:
        return self.rows.get(order_id)

    async def lock_order(self, order_id: str) -> None:
        return None  # one task at a time: nothing to serialise

    async def lock_orders(self, order_ids: list[str]) -> None:
        return None

    async def cancelled_of(self, order_ids: list[str]) -> set[str]:
        return self.cancelled & set(order_ids)

    async def remember_cancellation(self, order_id: str, reason: str) -> None:
        self.cancelled.add(order_id)
        if (request := self.rows.get(order_id)) is not None:
            self.rows[order_id] = replace(request, cancelled_at=request.placed_at)

    async def was_cancelled(self, order_id: str) -> bool:
        return order_id in self.cancelled


class FakeDeliveries:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    async def first(self, source: str, delivery_id: str) -> bool:
        if (source, delivery_id) in self.seen:
            return False
        self.seen.add((source, delivery_id))
        return True


class FakeWaiting:
    """Waiting lines by (order id, line id): (reason, since, retry_at, attempts)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], tuple[str, datetime, datetime | None, int]] = {}

    async def wait(
        self,
        order_id: str,
        line_ids: list[str],
        reason: str,
        now: datetime,
        *,
        retry_after_s: float,
        max_retry_s: float,
    ) -> tuple[list[str], datetime]:
        fresh = [ln for ln in line_ids if (order_id, ln) not in self.rows]
        since = min([now, *(self.rows[(order_id, ln)][1] for ln in line_ids if ln not in fresh)])
        for ln in line_ids:
            _, started, _, attempts = self.rows.get((order_id, ln), (reason, now, None, -1))
            retry = now + timedelta(seconds=min(retry_after_s * 2 ** (attempts + 1), max_retry_s))
            self.rows[(order_id, ln)] = (reason, started, retry, attempts + 1)
        return fresh, since

    async def due(self, now: datetime, limit: int = 100) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for (order_id, ln), (reason, since, retry, attempts) in list(self.rows.items()):
            if retry is not None and retry <= now:
                out.setdefault(order_id, []).append(ln)
                self.rows[(order_id, ln)] = (reason, since, None, attempts)
        return out

    async def of_order(self, order_id: str) -> dict[str, WaitingLine]:
        return {
            ln: WaitingLine(oid, ln, *row)
            for (oid, ln), row in self.rows.items()
            if oid == order_id
        }

    async def retry_now(self, now: datetime) -> int:
        for key, (reason, since, retry, attempts) in list(self.rows.items()):
            if retry is not None:
                self.rows[key] = (reason, since, now, attempts)
        return len(self.rows)

    async def clear(self, order_id: str, line_ids: list[str] | None = None) -> None:
        for key in list(self.rows):
            if key[0] == order_id and (line_ids is None or key[1] in line_ids):
                del self.rows[key]

    async def clear_lines(self, lines: dict[str, list[str]]) -> None:
        for order_id, line_ids in lines.items():
            await self.clear(order_id, line_ids)


class FakeClocks:
    def __init__(
        self, orders: FakeSupplierOrders | None = None, deliveries: FakeDeliveries | None = None
    ) -> None:
        self.moved_at: dict[str, datetime] = {}
        self.orders = orders
        self.deliveries = deliveries or FakeDeliveries()

    async def moved_once(
        self, delivery_id: str, tracking_number: str, when: datetime
    ) -> tuple[bool, bool]:
        if not await self.deliveries.first(TRACKING, delivery_id):
            return False, False
        return True, await self.moved_if_shipped(tracking_number, when)

    async def moved(self, tracking_number: str, when: datetime) -> None:
        self.moved_at[tracking_number] = when

    async def moved_if_shipped(self, tracking_number: str, when: datetime) -> bool:
        rows = self.orders.rows.values() if self.orders is not None else ()
        if not any(so.tracking_number == tracking_number for so in rows):
            return False
        self.moved_at[tracking_number] = when
        return True


class FakeHolds:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[datetime | None, datetime | None, set[str]]] = {}

    async def held(self, order_id: str) -> bool:
        held, released, _ = self.rows.get(order_id, (None, None, set()))
        return held is not None and (released is None or held > released)

    async def held_of(self, order_ids: list[str]) -> set[str]:
        return {o for o in order_ids if await self.held(o)}

    async def hold(self, order_id: str, at: datetime) -> None:
        held, released, parked = self.rows.get(order_id, (None, None, set()))
        self.rows[order_id] = (max(at, held) if held else at, released, parked)

    async def release(self, order_id: str, at: datetime) -> list[str]:
        held, released, parked = self.rows.get(order_id, (None, None, set()))
        self.rows[order_id] = (held, max(at, released) if released else at, parked)
        if await self.held(order_id):
            return []
        self.rows[order_id] = (held, self.rows[order_id][1], set())
        return sorted(parked)

    async def park(self, order_id: str, line_ids: list[str]) -> None:
        held, released, parked = self.rows.get(order_id, (None, None, set()))
        self.rows[order_id] = (held, released, parked | set(line_ids))


@dataclass
class FakeUnitOfWork:
    """Events recorded with `emit` are `committed` only by `commit`, as the outbox's are."""

    lease: timedelta = timedelta(seconds=60)
    check_after: timedelta = timedelta(seconds=30)
    retry_waiting_s: float = 5.0
    retry_waiting_max_s: float = 60.0
    committed: list[EventData] = field(default_factory=list)
    pending: list[EventData] = field(default_factory=list)
    tally: dict[str, Counter[str]] = field(default_factory=dict)
    handed_off: list[NewSupplierOrder] = field(default_factory=list)
    commits: int = 0
    single: bool = False

    def __post_init__(self) -> None:
        self.supplier_orders = FakeSupplierOrders(self)
        self.offers = FakeOffers()
        self.suppliers = FakeSuppliers()
        self.routing_requests = FakeRoutingRequests()
        self.deliveries = FakeDeliveries()
        self.waiting = FakeWaiting()
        self.holds = FakeHolds()
        self.clocks = FakeClocks(self.supplier_orders, self.deliveries)
        self._to_hand_off: list[NewSupplierOrder] = []

    async def __aenter__(self) -> FakeUnitOfWork:
        self.pending, self._to_hand_off, self.single = [], [], False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.pending = []

    def emit(self, data: EventData) -> None:
        self.pending.append(data)

    async def single_statement(self, *, reads: bool = False) -> None:
        self.single = True

    def dispatch_after_commit(self, orders: list[NewSupplierOrder]) -> None:
        self._to_hand_off += orders

    def withdraw(self, so_ids: list[str]) -> None:
        self._to_hand_off = [o for o in self._to_hand_off if o.id not in so_ids]

    async def commit(self) -> None:
        if self.single and self.pending:
            raise RuntimeError("a single-statement unit of work cannot emit events")
        self.committed += self.pending
        self.pending = []
        self.handed_off += self._to_hand_off
        self._to_hand_off = []
        self.commits += 1

    def of_type(self, kind: type[EventData]) -> list[Any]:
        return [e for e in self.committed + self.pending if isinstance(e, kind)]
