"""Waiting lines (`waiting_supplier`), order holds, clock alarms raised once, parcel movement."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, and_, bindparam, delete, exists, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.supplier.domain import State
from services.supplier.store.base import AfterCommit, Sql, rowcount
from services.supplier.store.requests import (
    TRACKING,
    CallbackDeliveries,
    first_delivery,
    first_delivery_params,
)
from services.supplier.tables import (
    allocation,
    clock_alarm,
    order_hold,
    routing_request,
    supplier_order,
    tracking_movement,
    waiting_line,
)
from shared.db import aware

_WAITING_ORDER = waiting_line.c.order_id == bindparam("w_order_id")
_CLEAR_ORDER = delete(waiting_line).where(_WAITING_ORDER)
_CLEAR_LINES = _CLEAR_ORDER.where(
    waiting_line.c.line_id.in_(bindparam("w_line_ids", expanding=True))
)


def _moved_if_shipped(insert: Any) -> Any:
    """INSERT ... SELECT the movement WHERE a supplier order has the tracking number,
    ON CONFLICT moved_at = the new one (PostgreSQL and SQLite alike)."""
    tracking = bindparam("m_tracking", type_=tracking_movement.c.tracking_number.type)
    when = bindparam("m_when", type_=tracking_movement.c.moved_at.type)
    shipped = exists().where(supplier_order.c.tracking_number == tracking)
    stmt = insert(tracking_movement).from_select(
        ["tracking_number", "moved_at"], select(tracking, when).where(shipped)
    )
    return stmt.on_conflict_do_update(
        index_elements=["tracking_number"], set_={"moved_at": stmt.excluded.moved_at}
    )


def _moved_once_pg() -> Any:
    """`first_delivery` and `_moved_if_shipped` in one PostgreSQL statement: the
    movement is written only if the delivery id was new (data-modifying CTEs see each
    other only through RETURNING). Answers (fresh, moved): 1 or 0 each."""
    fresh = first_delivery()
    tracking = bindparam("m_tracking", type_=tracking_movement.c.tracking_number.type)
    when = bindparam("m_when", type_=tracking_movement.c.moved_at.type)
    shipped = exists().where(supplier_order.c.tracking_number == tracking)
    insert = pg_insert(tracking_movement).from_select(
        ["tracking_number", "moved_at"],
        select(tracking, when).where(shipped, exists(select(fresh.c.delivery_id))),
    )
    moved = (
        insert.on_conflict_do_update(
            index_elements=["tracking_number"], set_={"moved_at": insert.excluded.moved_at}
        )
        .returning(tracking_movement.c.tracking_number)
        .cte("moved")
    )
    return select(
        select(func.count()).select_from(fresh).scalar_subquery().label("fresh"),
        select(func.count()).select_from(moved).scalar_subquery().label("moved"),
    )


_MOVED_ONCE_PG = _moved_once_pg()


@dataclass(frozen=True)
class WaitingLine:
    order_id: str
    line_id: str
    reason: str
    since: datetime
    retry_at: datetime | None
    attempts: int


class WaitingLines:
    def __init__(self, sql: Sql, after: AfterCommit | None = None) -> None:
        self._sql = sql
        self._after = after or AfterCommit()

    async def of_order(self, order_id: str) -> dict[str, WaitingLine]:
        rows = await self._sql.run(select(waiting_line).where(waiting_line.c.order_id == order_id))
        return {r.line_id: _line(r) for r in rows}

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
        """Park lines until their next try (backing off per attempt); returns the lines that
        were not waiting before and when the earliest of them started waiting."""
        known = await self.of_order(order_id)
        self._after.wake_waiting = True  # the clock learns the new next try
        fresh = [ln for ln in line_ids if ln not in known]
        since = min([now, *(known[ln].since for ln in line_ids if ln in known)])
        for ln in line_ids:
            if ln in known:
                attempts = known[ln].attempts + 1
                pause = min(retry_after_s * 2 ** min(attempts, 16), max_retry_s)
                await self._sql.run(
                    update(waiting_line)
                    .where(waiting_line.c.order_id == order_id, waiting_line.c.line_id == ln)
                    .values(reason=reason, attempts=attempts, retry_at=_after(now, pause))
                )
            else:
                await self._sql.run(
                    self._sql.insert()(waiting_line)
                    .values(
                        order_id=order_id,
                        line_id=ln,
                        reason=reason,
                        since=now,
                        attempts=0,
                        retry_at=_after(now, retry_after_s),
                    )
                    .on_conflict_do_nothing()
                )
        return fresh, since

    async def due(self, now: datetime, limit: int = 100) -> dict[str, list[str]]:
        """Lines whose next try is due, by order, taken (their `retry_at` cleared)."""
        query = (
            select(waiting_line.c.order_id, waiting_line.c.line_id)
            .where(waiting_line.c.retry_at <= now)
            .order_by(waiting_line.c.retry_at)
            .limit(limit)
        )
        if self._sql.dialect == "postgresql":
            query = query.with_for_update(skip_locked=True)
        out: dict[str, list[str]] = {}
        for r in await self._sql.run(query):
            out.setdefault(r.order_id, []).append(r.line_id)
        for order_id, lines in out.items():
            await self._sql.run(
                update(waiting_line)
                .where(waiting_line.c.order_id == order_id, waiting_line.c.line_id.in_(lines))
                .values(retry_at=None)
            )
        return out

    async def retry_now(self, now: datetime) -> int:
        """A supplier recovered: every waiting line is tried again at once."""
        result = await self._sql.run(
            update(waiting_line).where(waiting_line.c.retry_at.is_not(None)).values(retry_at=now)
        )
        self._after.wake_waiting = True
        return rowcount(result)

    async def next_due(self) -> datetime | None:
        """When the earliest waiting line is next tried (None: no line waits)."""
        return aware(await self._sql.scalar(select(func.min(waiting_line.c.retry_at))))

    async def clear(self, order_id: str, line_ids: list[str] | None = None) -> None:
        if line_ids is None:
            await self._sql.run(_CLEAR_ORDER, {"w_order_id": order_id})
        else:
            await self._sql.run(_CLEAR_LINES, {"w_order_id": order_id, "w_line_ids": line_ids})

    async def clear_lines(self, lines: dict[str, list[str]]) -> None:
        """`clear` of these lines (order id -> line ids) of many orders, in one statement."""
        if lines:
            t = waiting_line.c
            await self._sql.run(
                delete(waiting_line).where(
                    or_(*(and_(t.order_id == o, t.line_id.in_(ids)) for o, ids in lines.items()))
                )
            )


class Clocks:
    """Alarms that fire once per subject, and when each parcel last moved."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    async def fire_once(self, subject: str, kind: str, now: datetime) -> bool:
        stmt = (
            self._sql.insert()(clock_alarm)
            .values(subject=subject, kind=kind, fired_at=now)
            .on_conflict_do_nothing()
        )
        return rowcount(await self._sql.run(stmt)) == 1

    async def fired(self, kind: str, subjects: set[str]) -> set[str]:
        if not subjects:
            return set()
        rows = await self._sql.run(
            select(clock_alarm.c.subject).where(
                clock_alarm.c.kind == kind, clock_alarm.c.subject.in_(subjects)
            )
        )
        return {r.subject for r in rows}

    async def moved(self, tracking_number: str, when: datetime) -> None:
        await self._sql.run(
            self._sql.insert()(tracking_movement)
            .values(tracking_number=tracking_number, moved_at=when)
            .on_conflict_do_update(index_elements=["tracking_number"], set_={"moved_at": when})
        )

    async def moved_if_shipped(self, tracking_number: str, when: datetime) -> bool:
        """`moved`, in one statement, if a supplier order ships under this tracking number;
        False (nothing written) if none does."""
        stmt = self._sql.prebuilt("clocks.moved_if_shipped", _moved_if_shipped)
        result = await self._sql.run(stmt, {"m_tracking": tracking_number, "m_when": when})
        return rowcount(result) > 0

    async def moved_once(
        self, delivery_id: str, tracking_number: str, when: datetime
    ) -> tuple[bool, bool]:
        """A carrier's in-transit update under its delivery id: (the delivery id is new,
        a supplier order ships under the number and its movement was written).

        PostgreSQL: one statement, so the unit of work can send it without BEGIN and
        COMMIT (`single_statement`). SQLite: the delivery id, then `moved_if_shipped`.
        """
        if self._sql.dialect != "postgresql":
            if not await CallbackDeliveries(self._sql).first(TRACKING, delivery_id):
                return False, False
            return True, await self.moved_if_shipped(tracking_number, when)
        params = {
            **first_delivery_params(TRACKING, delivery_id),
            "m_tracking": tracking_number,
            "m_when": when,
        }
        row = (await self._sql.run(_MOVED_ONCE_PG, params)).one()
        return bool(row.fresh), bool(row.moved)

    async def last_moved(self, tracking_numbers: set[str]) -> dict[str, datetime]:
        if not tracking_numbers:
            return {}
        rows = await self._sql.run(
            select(tracking_movement).where(
                tracking_movement.c.tracking_number.in_(tracking_numbers)
            )
        )
        return {r.tracking_number: aware(r.moved_at) or r.moved_at for r in rows}


# Read for every batch of events: built once, the ids one expanding parameter
# (PostgreSQL locks the rows, in id order).
_HELD_OF = select(order_hold).where(
    order_hold.c.order_id.in_(bindparam("p_order_ids", expanding=True))
)
_HELD_OF_PG = _HELD_OF.order_by(order_hold.c.order_id).with_for_update()


class Holds:
    """Orders on hold, and the lines parked while they are."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    async def _row(self, order_id: str) -> Row[Any] | None:
        query = select(order_hold).where(order_hold.c.order_id == order_id)
        if self._sql.dialect == "postgresql":
            query = query.with_for_update()
        return (await self._sql.run(query)).first()

    async def _put(self, order_id: str, **values: Any) -> None:
        if await self._row(order_id) is None:
            await self._sql.run(
                self._sql.insert()(order_hold)
                .values(order_id=order_id, parked=[], **values)
                .on_conflict_do_nothing()
            )
        await self._sql.run(
            update(order_hold).where(order_hold.c.order_id == order_id).values(**values)
        )

    async def held(self, order_id: str) -> bool:
        return _held(await self._row(order_id))

    async def held_of(self, order_ids: list[str]) -> set[str]:
        """Which of these orders are on hold (`held` for many, their rows locked alike)."""
        if not order_ids:
            return set()
        query = _HELD_OF_PG if self._sql.dialect == "postgresql" else _HELD_OF
        rows = await self._sql.run(query, {"p_order_ids": sorted(set(order_ids))})
        return {r.order_id for r in rows if _held(r)}

    async def hold(self, order_id: str, at: datetime) -> None:
        row = await self._row(order_id)
        last = aware(row.held_at) if row is not None else None
        await self._put(order_id, held_at=max(at, last) if last else at)

    async def release(self, order_id: str, at: datetime) -> list[str]:
        """Record the release; the parked lines, taken, if the order is no longer held."""
        row = await self._row(order_id)
        last = aware(row.released_at) if row is not None else None
        await self._put(order_id, released_at=max(at, last) if last else at)
        if await self.held(order_id):
            return []
        row = await self._row(order_id)
        parked = list(row.parked) if row is not None else []
        await self._put(order_id, parked=[])
        return parked

    async def park(self, order_id: str, line_ids: list[str]) -> None:
        row = await self._row(order_id)
        parked = list(row.parked) if row is not None else []
        await self._put(order_id, parked=sorted({*parked, *line_ids}))


@dataclass(frozen=True)
class Unaccepted:
    """An order past its handling deadline, with the supplier holding each undecided line."""

    order_id: str
    late: dict[str, str | None]  # line id -> supplier id holding it undecided (None: nobody)


@dataclass(frozen=True)
class Silent:
    so_id: str
    order_id: str
    supplier_id: str


ACCEPTED = (State.ACCEPTED.value, State.DISPATCHED.value, State.DELIVERED.value)
UNDECIDED = (State.SENDING.value, State.RECEIVED.value, State.BACKORDERED.value)
HANDLING = "handling_checked"
LOST = "lost_in_transit"


class ClockScans:
    """The handling and lost-parcel clocks' queries; each subject is checked once."""

    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    async def past_handling(self, deadline: datetime, limit: int = 200) -> list[Unaccepted]:
        """Orders placed before `deadline` not yet checked, with the lines not accepted
        by `placed_at + handling` (checked against each acceptance time)."""
        alarm = clock_alarm.alias()
        rows = await self._sql.run(
            select(routing_request.c.order_id, routing_request.c.lines)
            .outerjoin(
                alarm,
                and_(alarm.c.subject == routing_request.c.order_id, alarm.c.kind == HANDLING),
            )
            .where(
                alarm.c.subject.is_(None),
                routing_request.c.placed_at <= deadline,
                routing_request.c.cancelled_at.is_(None),
            )
            .limit(limit)
        )
        requests = {r.order_id: [x["line_id"] for x in r.lines] for r in rows}
        if not requests:
            return []
        held = await self._sql.run(
            select(
                allocation.c.order_id,
                allocation.c.line_id,
                supplier_order.c.supplier_id,
                supplier_order.c.state,
                supplier_order.c.confirmed_at,
                routing_request.c.placed_at,
            )
            .join(supplier_order, supplier_order.c.id == allocation.c.supplier_order_id)
            .join(routing_request, routing_request.c.order_id == allocation.c.order_id)
            .where(allocation.c.order_id.in_(list(requests)))
        )
        accepted: set[tuple[str, str]] = set()
        holder: dict[tuple[str, str], str] = {}
        for r in held:
            key = (r.order_id, r.line_id)
            if r.state in ACCEPTED:
                accepted.add(key)
            elif r.state in UNDECIDED:
                holder[key] = r.supplier_id
        return [
            Unaccepted(
                order_id,
                {ln: holder.get((order_id, ln)) for ln in lines if (order_id, ln) not in accepted},
            )
            for order_id, lines in requests.items()
        ]

    async def silent(self, cutoff: datetime, limit: int = 200) -> list[Silent]:
        """Dispatched supplier orders whose parcel has not moved since `cutoff`, not yet
        reported lost."""
        alarm = clock_alarm.alias()
        last = func.coalesce(tracking_movement.c.moved_at, supplier_order.c.dispatched_at)
        rows = await self._sql.run(
            select(supplier_order.c.id, supplier_order.c.order_id, supplier_order.c.supplier_id)
            .outerjoin(
                tracking_movement,
                tracking_movement.c.tracking_number == supplier_order.c.tracking_number,
            )
            .outerjoin(alarm, and_(alarm.c.subject == supplier_order.c.id, alarm.c.kind == LOST))
            .where(
                supplier_order.c.state == State.DISPATCHED.value,
                alarm.c.subject.is_(None),
                last <= cutoff,
            )
            .limit(limit)
        )
        return [Silent(r.id, r.order_id, r.supplier_id) for r in rows]


def _held(row: Row[Any] | None) -> bool:
    if row is None or row.held_at is None:
        return False
    released = aware(row.released_at)
    return released is None or (aware(row.held_at) or released) > released


def _after(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def _line(row: Row[Any]) -> WaitingLine:
    since = aware(row.since)
    assert since is not None
    return WaitingLine(
        row.order_id, row.line_id, row.reason, since, aware(row.retry_at), row.attempts
    )
