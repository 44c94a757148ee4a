"""Supplier orders (the aggregate to and from rows, with their allocations) and work queues."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    and_,
    bindparam,
    case,
    delete,
    exists,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from services.supplier.domain import (
    CALLED_OFF_LATE,
    PASSED_OVER,
    QUEUED,
    SOURCES,
    WAITING_FOR_DECISION,
    Action,
    AllocatedLine,
    State,
    SupplierOrder,
)
from services.supplier.store.base import AfterCommit, Sql
from services.supplier.store.requests import (
    CallbackDeliveries,
    first_delivery,
    first_delivery_params,
)
from services.supplier.tables import allocation, supplier_order, waiting_line
from shared.db import aware
from shared.events import EventData

_LINE_COLUMNS = (
    "line_id",
    "sku",
    "supplier_sku",
    "quantity",
    "unit_cost",
    "unit_price",
    "currency",
)
_ORDER_WAITING = (
    exists().where(waiting_line.c.order_id == supplier_order.c.order_id).label("order_waiting")
)
"""Whether any line of the order waits for a supplier (read with the aggregate, so a
decision has no waiting lines to clear in the common case and sends no statement)."""
_WITH_LINES = select(
    supplier_order, _ORDER_WAITING, *(allocation.c[k].label(f"a_{k}") for k in _LINE_COLUMNS)
).outerjoin(allocation, allocation.c.supplier_order_id == supplier_order.c.id)
_BY_ID = _WITH_LINES.where(supplier_order.c.id == bindparam("so_id")).order_by(allocation.c.id)
_BY_ID_LOCKED = _BY_ID.with_for_update(of=supplier_order)
_BY_TRACKING = (
    _WITH_LINES.where(supplier_order.c.tracking_number == bindparam("tracking"))
    .order_by(supplier_order.c.created_at, allocation.c.id)
    .with_for_update(of=supplier_order)
)


def _once(load: Select[Any], *order: str) -> Select[Any]:
    """PostgreSQL: `load`, only if a callback's delivery id is new, in the statement that
    records the id (`CallbackDeliveries.first` and the load in one round trip).

    Every row carries `fresh` (1: the id was new); a redelivery gets one row with `fresh`
    0 and nothing locked, a new id whose order is unknown one row of NULLs. The rows keep
    `load`'s order (`order`: its columns, then the allocation's id).
    """
    fresh = first_delivery()
    f = select(func.count().label("fresh")).select_from(fresh).subquery("f")
    found = load.add_columns(allocation.c.id.label("a_id")).where(f.c.fresh > 0).lateral("w")
    return (
        select(f.c.fresh, found)
        .select_from(f.outerjoin(found, true()))
        .order_by(*(found.c[k] for k in (*order, "a_id")))
    )


def _group(*where: ColumnElement[bool]) -> Select[Any]:
    """The supplier orders a group of callbacks names, locked in id order (two groups
    locking overlapping sets wait for each other, they cannot deadlock)."""
    return (
        _WITH_LINES.where(or_(*where))
        .order_by(supplier_order.c.id, allocation.c.id)
        .with_for_update(of=supplier_order)
    )


_IDS = supplier_order.c.id.in_(bindparam("so_ids", expanding=True))
_NUMBERS = supplier_order.c.tracking_number.in_(bindparam("numbers", expanding=True))
_GROUP = {  # by what the group names: ids, tracking numbers, or both
    (True, False): _group(_IDS),
    (False, True): _group(_NUMBERS),
    (True, True): _group(_IDS, _NUMBERS),
}


@dataclass(frozen=True, slots=True)
class GroupCall:
    """A callback of a group applied in one transaction (`take_group`): its delivery id's
    source and id, and the supplier order it names by id or by tracking number."""

    source: str
    delivery_id: str
    so_id: str | None = None
    tracking_number: str | None = None


_BY_ID_ONCE = _once(_BY_ID_LOCKED)
_BY_TRACKING_ONCE = _once(_BY_TRACKING, "created_at")
_SAVE = update(supplier_order).where(supplier_order.c.id == bindparam("s_so_id"))
"""Sets the columns its parameters name (what changed): compiled once per set of columns."""
_STORED = tuple(f.name for f in fields(SupplierOrder) if f.name not in ("lines", "events", "tally"))
_TIMES = frozenset(
    f.name for f in fields(SupplierOrder) if f.name.endswith(("_at", "_until", "ship_by"))
)


def _in(states: Iterable[State]) -> list[str]:
    return sorted(s.value for s in states)


def _values(values: dict[str, Any]) -> dict[str, Any]:
    """Column values as the drivers want them (a state as its plain string)."""
    return {k: v.value if isinstance(v, State) else v for k, v in values.items()}


[_SENDING] = SOURCES[Action.RECEIVE]  # one state: `=`, as an executemany cannot expand IN
_MARK_RECEIVED = (
    update(supplier_order)
    .where(supplier_order.c.id == bindparam("so_id"), supplier_order.c.state == _SENDING.value)
    .values(
        state=State.RECEIVED.value,
        supplier_order_ref=bindparam("ref"),
        sent_at=bindparam("sent"),
        lease_until=None,
        next_check_at=bindparam("check_at"),
    )
)
_FREE = supplier_order.alias("free")
_MARK_RECEIVED_UNLESS_LOCKED = _MARK_RECEIVED.where(
    supplier_order.c.id
    == select(_FREE.c.id)
    .where(_FREE.c.id == bindparam("so_id"))
    .with_for_update(skip_locked=True)
    .scalar_subquery()
)
"""PostgreSQL: `_MARK_RECEIVED`, skipping a row another transaction holds locked."""


IN_PROGRESS = frozenset({State.ACCEPTED, State.DISPATCHED})
"""Decided orders still on their way: asked about when their next step is not reported."""
PROGRESS_HORIZON = timedelta(days=30)
"""How long after its last step an order on its way is still asked about."""
_NEXT_CHECK = (
    update(supplier_order)
    .where(supplier_order.c.id == bindparam("so_id"))
    .values(next_check_at=bindparam("check_at"))
)


@dataclass(frozen=True, slots=True)
class StatusCheck:
    """A supplier order whose status is to be asked of its supplier."""

    so_id: str
    supplier_id: str
    supplier_order_ref: str | None


@dataclass(frozen=True, slots=True)
class AllocationView:
    """Who got which line of an order, at what cost, in what state."""

    order_id: str
    line_id: str
    sku: str
    quantity: int
    supplier_id: str
    supplier_order_id: str
    supplier_order_ref: str | None
    supplier_sku: str
    unit_cost: Decimal
    currency: str
    state: str


class SupplierOrderRepository:
    """Loads and saves `SupplierOrder`s: `save` writes only what changed since loading,
    records the events (outbox) and counter increments, and wakes the dispatcher when an
    order was queued for it."""

    def __init__(
        self, sql: Sql, after: AfterCommit, emit: Callable[[EventData], object], lease: timedelta
    ) -> None:
        self._sql = sql
        self._after = after
        self._emit = emit
        self._lease = lease
        self._loaded: dict[str, dict[str, Any]] = {}
        self._no_waiting: set[str] = set()  # loaded while no line of their order waited
        # a callback group's (`take_group`): delivery ids recorded, whether each was new;
        # orders locked and loaded, until first asked for; tracking number -> order id
        self._recorded: dict[tuple[str, str], bool] = {}
        self._taken: dict[str, SupplierOrder] = {}
        self._shipping: dict[str, str] = {}
        self._defer = False
        self._held: dict[str, dict[str, Any]] = {}  # id -> changed columns (`defer_saves`)

    # -- loading ----------------------------------------------------------------------
    async def get(self, so_id: str, *, for_update: bool = False) -> SupplierOrder | None:
        """The supplier order and its allocations in one statement (locked with `for_update`)."""
        query = _BY_ID_LOCKED if for_update else _BY_ID
        found = self._from_joined(list(await self._sql.run(query, {"so_id": so_id})))
        return found[0] if found else None

    async def by_tracking(self, tracking_number: str) -> SupplierOrder | None:
        rows = await self._sql.run(_BY_TRACKING, {"tracking": tracking_number})
        found = self._from_joined(list(rows))
        return found[0] if found else None

    async def get_once(
        self, so_id: str, source: str, delivery_id: str
    ) -> tuple[bool, SupplierOrder | None]:
        """A callback's supplier order, locked, if its delivery id is new: (new, the order
        or None). The id is recorded (`CallbackDeliveries.first`) in the same statement on
        PostgreSQL; SQLite sends the two. In a callback group, from `take_group`."""
        load = partial(self.get, so_id, for_update=True)
        grouped = await self._in_group(source, delivery_id, so_id, load)
        if grouped is not None:
            return grouped
        if self._sql.dialect != "postgresql":
            if not await CallbackDeliveries(self._sql).first(source, delivery_id):
                return False, None
            return True, await load()
        return await self._once(_BY_ID_ONCE, {"so_id": so_id}, source, delivery_id)

    async def by_tracking_once(
        self, tracking_number: str, source: str, delivery_id: str
    ) -> tuple[bool, SupplierOrder | None]:
        """`by_tracking`, as `get_once` is `get`."""
        load = partial(self.by_tracking, tracking_number)
        so_id = self._shipping.get(tracking_number)
        grouped = await self._in_group(source, delivery_id, so_id, load)
        if grouped is not None:
            return grouped
        if self._sql.dialect != "postgresql":
            if not await CallbackDeliveries(self._sql).first(source, delivery_id):
                return False, None
            return True, await load()
        params = {"tracking": tracking_number}
        return await self._once(_BY_TRACKING_ONCE, params, source, delivery_id)

    async def _in_group(
        self,
        source: str,
        delivery_id: str,
        so_id: str | None,
        load: Callable[[], Awaitable[SupplierOrder | None]],
    ) -> tuple[bool, SupplierOrder | None] | None:
        """A callback of a group (`take_group`): (new, the order or None), the order as
        the group took it if no one has asked for it since, else read again by `load`;
        None if the delivery id was not recorded by a group."""
        recorded = self._recorded.pop((source, delivery_id), None)
        if recorded is None:
            return None
        if not recorded:
            return False, None
        so = self._taken.pop(so_id, None) if so_id is not None else None
        return True, so if so is not None else await load()

    async def _once(
        self, query: Select[Any], params: dict[str, Any], source: str, delivery_id: str
    ) -> tuple[bool, SupplierOrder | None]:
        params = {**params, **first_delivery_params(source, delivery_id)}
        rows = list(await self._sql.run(query, params))
        if not rows[0].fresh:
            return False, None
        found = self._from_joined([r for r in rows if r.id is not None])
        return True, found[0] if found else None

    async def take_group(self, calls: Sequence[GroupCall]) -> None:
        """Ahead of a group of callbacks applied in one transaction, in two statements:
        their delivery ids recorded, and the supplier orders the new ones name locked
        and loaded in id order. `get_once` and `by_tracking_once` hand each order over
        the first time it is asked for. Asked again, or once anything else of this
        transaction loaded it, it is read again; so is a tracking number's order once
        any order's tracking number changed: each callback sees what the ones before it
        did, as it would alone."""
        fresh = await CallbackDeliveries(self._sql).first_many(
            [(c.source, c.delivery_id) for c in calls]
        )
        for c in calls:  # a delivery id given twice: the second is asked for as usual
            self._recorded.setdefault((c.source, c.delivery_id), (c.source, c.delivery_id) in fresh)
        new = [c for c in calls if (c.source, c.delivery_id) in fresh]
        ids = sorted({c.so_id for c in new if c.so_id is not None})
        numbers = sorted({c.tracking_number for c in new if c.tracking_number is not None})
        if not ids and not numbers:
            return
        query = _GROUP[bool(ids), bool(numbers)]
        found = self._from_joined(
            list(await self._sql.run(query, {"so_ids": ids, "numbers": numbers}))
        )
        self._taken.update((so.id, so) for so in found)
        for so in sorted(found, key=lambda so: so.created_at):  # `by_tracking`'s first
            if so.tracking_number is not None:
                self._shipping.setdefault(so.tracking_number, so.id)

    async def of_order(self, order_id: str) -> list[SupplierOrder]:
        query = _WITH_LINES.where(supplier_order.c.order_id == order_id).order_by(
            supplier_order.c.created_at, supplier_order.c.id, allocation.c.id
        )
        return self._from_joined(list(await self._sql.run(query)))

    def lines_may_wait(self, so: SupplierOrder) -> bool:
        """False when, as it was loaded here, no line of its order waited for a supplier
        (a line a supplier order is working on is never parked again meanwhile)."""
        return so.id not in self._no_waiting

    def _from_joined(self, rows: list[Row[Any]]) -> list[SupplierOrder]:
        out: dict[str, SupplierOrder] = {}
        for r in rows:
            so = out.get(r.id)
            if so is None:
                so = out[r.id] = self._load(r, [])
                if r.order_waiting:
                    self._no_waiting.discard(r.id)
                else:
                    self._no_waiting.add(r.id)
            if r.a_line_id is not None:
                so.lines.append(_line({k: getattr(r, f"a_{k}") for k in _LINE_COLUMNS}))
        return list(out.values())

    async def _with_lines(self, rows: list[Row[Any]]) -> list[SupplierOrder]:
        """Aggregates of `rows`, their allocations read in one more statement."""
        if not rows:
            return []
        lines: dict[str, list[AllocatedLine]] = {r.id: [] for r in rows}
        for a in await self._sql.run(
            select(allocation)
            .where(allocation.c.supplier_order_id.in_(list(lines)))
            .order_by(allocation.c.id)
        ):
            lines[a.supplier_order_id].append(_line({k: getattr(a, k) for k in _LINE_COLUMNS}))
        return [self._load(r, lines[r.id]) for r in rows]

    def _load(self, row: Row[Any], lines: list[AllocatedLine]) -> SupplierOrder:
        stored = {k: getattr(row, k) for k in _STORED}
        for k in _TIMES:
            stored[k] = aware(stored[k])
        stored["state"] = State(stored["state"])
        self._taken.pop(row.id, None)  # loaded again: a group's copy may be behind
        stored["attempts"] = stored["attempts"] or 0
        for flag in ("at_risk_sent", "deadline_sent", "major_sent"):
            stored[flag] = bool(stored[flag])
        self._loaded[row.id] = dict(stored)
        return SupplierOrder(**stored, lines=lines)

    # -- writing ----------------------------------------------------------------------
    async def add_all(self, orders: list[SupplierOrder]) -> None:
        if not orders:
            return
        await self._sql.run(
            supplier_order.insert(),
            [_values({k: getattr(so, k) for k in _STORED}) for so in orders],
        )
        await self._sql.run(
            allocation.insert(),
            [
                {"supplier_order_id": so.id, "order_id": so.order_id, **_line_row(a)}
                for so in orders
                for a in so.lines
            ],
        )
        for so in orders:
            self._loaded[so.id] = {k: getattr(so, k) for k in _STORED}

    async def remove(self, ids: list[str]) -> None:
        """Undo `add_all` within this transaction."""
        if ids:
            await self._sql.run(delete(allocation).where(allocation.c.supplier_order_id.in_(ids)))
            await self._sql.run(delete(supplier_order).where(supplier_order.c.id.in_(ids)))

    async def save(self, so: SupplierOrder) -> None:
        before = self._loaded.get(so.id, {})
        changes = {k: v for k in _STORED if (v := getattr(so, k)) != before.get(k)}
        if changes:
            if "tracking_number" in changes:  # a group's tracking numbers may be behind
                self._shipping.clear()
            if self._defer:
                self._held.setdefault(so.id, {}).update(_values(changes))
                self._sql.hold(self._write_held)
            else:
                await self._sql.run(_SAVE, {"s_so_id": so.id, **_values(changes)})
            self._loaded[so.id] = {**before, **changes}
            if "state" in changes and so.state in QUEUED:
                self._after.wake_dispatcher = True
        for event in so.events:
            self._emit(event)
        so.events.clear()
        self._after.count(so.supplier_id, so.tally)
        so.tally.clear()

    def defer_saves(self) -> None:
        """From now on in this transaction, `save` holds its changes back and they go
        together, one statement per set of changed columns, before the transaction's next
        statement (whatever reads or writes) or its commit (`Sql.hold`)."""
        self._defer = True

    @property
    def held(self) -> Mapping[str, Mapping[str, Any]]:
        """The changes held back so far: supplier order id -> changed columns."""
        return self._held

    def take_held(self) -> dict[str, dict[str, Any]]:
        """The changes held back, taken to be written by the caller (`one_trip`, at
        commit); none is left to write here."""
        held, self._held = self._held, {}
        return held

    async def _write_held(self) -> None:
        held, self._held = self._held, {}
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for so_id, values in held.items():
            by_columns.setdefault(tuple(sorted(values)), []).append({"s_so_id": so_id, **values})
        for rows in by_columns.values():
            await self._sql.run(_SAVE, rows if len(rows) > 1 else rows[0])

    # -- set-based moves --------------------------------------------------------------
    async def mark_received(self, sent: list[tuple[str, str]], check_after: timedelta) -> None:
        """(supplier order id, supplier_order_ref) placed at the supplier, in one batch.

        Only orders still `sending` change: a callback or a cancel may have got there
        first. On PostgreSQL a row a callback holds locked is skipped rather than waited
        for (that callback is deciding it), so one slow callback cannot hold up the batch
        and every callback behind it; one statement either way.
        """
        if not sent:
            return
        now = datetime.now(UTC)
        pg = self._sql.dialect == "postgresql"
        self._taken.clear()  # rows written past `save`: a group's copies may be behind

        await self._sql.run(
            _MARK_RECEIVED_UNLESS_LOCKED if pg else _MARK_RECEIVED,
            [
                {"so_id": so_id, "ref": ref, "sent": now, "check_at": now + check_after}
                for so_id, ref in sent
            ],
        )

    async def claim(self, limit: int) -> list[SupplierOrder]:
        """Take due work for this dispatcher under a lease: orders queued to send or cancel,
        and those whose lease ran out (their process died mid-call). Returned as claimed:
        `sending` to place, `cancelling` to call off."""
        self._taken.clear()  # rows written past `save`: a group's copies may be behind
        now = datetime.now(UTC)
        queued = supplier_order.c.state.in_(_in(QUEUED)) & (
            supplier_order.c.lease_until.is_(None) | (supplier_order.c.lease_until < now)
        )
        expired = supplier_order.c.state.in_(_in((State.SENDING, State.CANCELLING))) & (
            supplier_order.c.lease_until < now
        )
        query = (
            select(supplier_order)
            .where(or_(queued, expired))
            .order_by(supplier_order.c.created_at)
            .limit(limit)
        )
        rows = list(await self._sql.run(self._skip_locked(query)))
        for row in rows:
            cancel = State(row.state) in SOURCES[Action.CLAIM_CANCEL]
            await self._sql.run(
                update(supplier_order)
                .where(supplier_order.c.id == row.id)
                .values(
                    state=(State.CANCELLING if cancel else State.SENDING).value,
                    lease_until=now + self._lease,
                    attempts=supplier_order.c.attempts + 1,
                )
            )
        claimed = await self._with_lines(rows)
        for so in claimed:  # as the row now reads
            cancel = so.state in SOURCES[Action.CLAIM_CANCEL]
            so.state = State.CANCELLING if cancel else State.SENDING
            so.lease_until, so.attempts = now + self._lease, so.attempts + 1
            self._loaded[so.id].update(
                state=so.state, lease_until=so.lease_until, attempts=so.attempts
            )
        return claimed

    async def due_checks(
        self, limit: int, check_after: timedelta, check_max: timedelta | None = None
    ) -> list[StatusCheck]:
        """Take supplier orders whose check is due, and push their next check back.

        Undecided ones are due at `next_check_at` and then every `check_after`. Orders the
        supplier accepted but that have not been reported dispatched, and dispatched ones
        not reported delivered, are due `check_after` after their last step and then at
        gaps growing with the time since it (half of it, at most `check_max`), for
        `PROGRESS_HORIZON`: the callbacks or tracking updates that would have moved them
        on may all have been lost. Without `check_max`, only undecided orders are taken.
        """
        self._taken.clear()  # rows written past `save`: a group's copies may be behind
        now = datetime.now(UTC)
        c = supplier_order.c
        undecided = c.state.in_(_in(WAITING_FOR_DECISION)) & (c.next_check_at <= now)
        since = func.coalesce(c.dispatched_at, c.confirmed_at)
        progress = (
            c.state.in_(_in(IN_PROGRESS))
            & (since >= now - PROGRESS_HORIZON)
            & or_(c.next_check_at <= now, c.next_check_at.is_(None) & (since <= now - check_after))
        )
        query = (
            select(c.id, c.supplier_id, c.supplier_order_ref, c.state, since.label("since"))
            .where(or_(undecided, progress) if check_max is not None else undecided)
            .order_by(func.coalesce(c.next_check_at, since))
            .limit(limit)
        )
        rows = list(await self._sql.run(self._skip_locked(query)))
        if rows:
            gaps = {}
            for r in rows:
                gap, last = check_after, aware(r.since)
                if check_max is not None and State(r.state) in IN_PROGRESS and last is not None:
                    gap = min(check_max, max(check_after, (now - last) / 2))
                gaps[r.id] = now + gap
            await self._sql.run(
                _NEXT_CHECK, [{"so_id": so_id, "check_at": at} for so_id, at in gaps.items()]
            )
        return [StatusCheck(r.id, r.supplier_id, r.supplier_order_ref) for r in rows]

    async def next_check(
        self, check_after: timedelta, check_max: timedelta | None = None
    ) -> datetime | None:
        """When `due_checks` next has an order to take (None: none to check, ever, unless
        one is sent or moves on; each of those is first due `check_after` later)."""
        now = datetime.now(UTC)
        c = supplier_order.c
        since = func.coalesce(c.dispatched_at, c.confirmed_at)
        undecided = c.state.in_(_in(WAITING_FOR_DECISION))
        progress: ColumnElement[bool] = false()
        if check_max is not None:
            progress = c.state.in_(_in(IN_PROGRESS)) & (since >= now - PROGRESS_HORIZON)
        row = (
            await self._sql.run(
                select(
                    func.min(case((undecided | progress, c.next_check_at))).label("checks"),
                    func.min(case((progress & c.next_check_at.is_(None), since))).label("last"),
                ).where(undecided | progress)
            )
        ).one()
        checks, last = aware(row.checks), aware(row.last)
        times = [t for t in (checks, last + check_after if last else None) if t is not None]
        return min(times, default=None)

    async def sla_due(
        self, limit: int = 500, after: tuple[datetime, str] | None = None
    ) -> list[SupplierOrder]:
        """Accepted orders whose SLA clock may still fire, earliest deadline first: one
        page, from just past `after` (the last page's last `(ship_by, id)`)."""
        query = select(supplier_order).where(
            supplier_order.c.state.in_(_in(SOURCES[Action.CHECK_SLA])),
            supplier_order.c.major_sent.is_(False),
        )
        if after is not None:
            ship_by, so_id = after
            query = query.where(
                or_(
                    supplier_order.c.ship_by > ship_by,
                    and_(supplier_order.c.ship_by == ship_by, supplier_order.c.id > so_id),
                )
            )
        query = query.order_by(supplier_order.c.ship_by, supplier_order.c.id).limit(limit)
        return await self._with_lines(list(await self._sql.run(self._skip_locked(query))))

    def _skip_locked(self, query: Select[Any]) -> Select[Any]:
        """PostgreSQL: rows another replica holds are left to it."""
        if self._sql.dialect == "postgresql":
            return query.with_for_update(skip_locked=True)
        return query

    # -- reading ----------------------------------------------------------------------
    async def passed_over(
        self, order_id: str, states: Iterable[State] = PASSED_OVER, *, for_good: bool = False
    ) -> dict[str, frozenset[str]]:
        """Per line of the order, the suppliers that failed it (not to be offered it again);
        `states` narrows what counts as failing; `for_good` leaves out orders called off
        only because the supplier took them late (`CALLED_OFF_LATE`)."""
        query = (
            select(allocation.c.line_id, supplier_order.c.supplier_id)
            .join(supplier_order, supplier_order.c.id == allocation.c.supplier_order_id)
            .where(allocation.c.order_id == order_id, supplier_order.c.state.in_(_in(states)))
        )
        if for_good:
            query = query.where(func.coalesce(supplier_order.c.failure, "") != CALLED_OFF_LATE)
        rows = await self._sql.run(query)
        out: dict[str, set[str]] = {}
        for r in rows:
            out.setdefault(r.line_id, set()).add(r.supplier_id)
        return {k: frozenset(v) for k, v in out.items()}

    async def allocations(self, order_id: str) -> list[AllocationView]:
        rows = await self._sql.run(
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
        return [
            AllocationView(
                r.order_id,
                r.line_id,
                r.sku,
                r.quantity,
                r.supplier_id,
                r.supplier_order_id,
                r.supplier_order_ref,
                r.supplier_sku,
                Decimal(r.unit_cost),
                r.currency,
                r.state,
            )
            for r in rows
        ]

    async def count_for(self, supplier_id: str) -> int:
        return int(
            await self._sql.scalar(
                select(func.count())
                .select_from(supplier_order)
                .where(supplier_order.c.supplier_id == supplier_id)
            )
            or 0
        )

    async def confirm_seconds(self, supplier_id: str, limit: int = 5000) -> list[float]:
        """How long the supplier took to confirm, for its latest `limit` confirmed orders."""
        rows = await self._sql.run(
            select(supplier_order.c.created_at, supplier_order.c.confirmed_at)
            .where(
                supplier_order.c.supplier_id == supplier_id,
                supplier_order.c.confirmed_at.is_not(None),
            )
            .order_by(supplier_order.c.confirmed_at.desc())
            .limit(limit)
        )
        return [
            (
                (aware(r.confirmed_at) or r.confirmed_at) - (aware(r.created_at) or r.created_at)
            ).total_seconds()
            for r in rows
        ]


def _line(values: dict[str, Any]) -> AllocatedLine:
    return AllocatedLine(
        values["line_id"],
        values["sku"],
        values["supplier_sku"],
        int(values["quantity"]),
        Decimal(values["unit_cost"]),
        Decimal(values["unit_price"]),
        values["currency"],
    )


def _line_row(a: AllocatedLine) -> dict[str, Any]:
    return {k: getattr(a, k) for k in _LINE_COLUMNS}
