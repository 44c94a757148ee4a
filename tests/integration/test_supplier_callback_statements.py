"""The lifecycle's cheaper statements on PostgreSQL and SQLite: an in-transit update is one
guarded upsert (unknown parcels write nothing, a redelivery changes nothing), and marking
placed orders received is one statement that skips rows a callback holds (PostgreSQL).
On PostgreSQL both are one statement with their delivery id, sent without BEGIN/COMMIT.
Callbacks arriving together commit in one transaction, each with its own answer; one that
fails in a group fails alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.supplier import webhooks
from services.supplier.app import MIGRATIONS
from services.supplier.domain import (
    AllocatedLine,
    Credentials,
    Line,
    NewSupplier,
    RoutingRequest,
    State,
    SupplierOrder,
)
from services.supplier.handlers import callbacks, dispatch
from services.supplier.handlers.callbacks import (
    Outcome,
    Recorded,
    SupplierCallback,
    TrackingUpdate,
)
from services.supplier.settings import SupplierSettings
from services.supplier.store import Sealer, SupplierDirectory, SupplierUnitOfWork
from services.supplier.tables import (
    supplier_order,
    supplier_tally,
    tracking_movement,
    waiting_line,
)
from shared.db import aware, create_engine, migrate_async, outbox_table, session_factory
from tests.support.round_trips import round_trips

pytestmark = pytest.mark.integration
SUPPLIER = "sup_a"
CHECK_AFTER = timedelta(seconds=30)


def no() -> bool:
    return False


@dataclass
class Db:
    engine: AsyncEngine
    sessions: Any
    directory: SupplierDirectory
    backend: str

    def uow(self) -> SupplierUnitOfWork:
        # as in a service whose relay leads in its own process: no NOTIFY for other ones
        return SupplierUnitOfWork(self.sessions, directory=self.directory, notify_others=no)

    async def rows(self, query: Any) -> list[Any]:
        async with self.sessions() as s:
            return list(await s.execute(query))

    async def state(self, so_id: str) -> tuple[str, str | None]:
        cols = supplier_order.c
        [row] = await self.rows(select(cols.state, cols.supplier_order_ref).where(cols.id == so_id))
        return row.state, row.supplier_order_ref

    async def waiting(self) -> list[tuple[str, str]]:
        rows = await self.rows(select(waiting_line.c.order_id, waiting_line.c.line_id))
        return sorted((r.order_id, r.line_id) for r in rows)

    async def movements(self) -> dict[str, datetime]:
        rows = await self.rows(select(tracking_movement))
        return {r.tracking_number: aware(r.moved_at) for r in rows}


@pytest.fixture
async def db(database_url: Any, backend: str) -> AsyncIterator[Db]:
    url = await database_url("supplier")
    await migrate_async(MIGRATIONS, url)
    engine = create_engine(url)  # counts its statements
    directory = SupplierDirectory(Sealer(str, str), ttl_s=600)  # read once: not counted
    found = Db(engine, session_factory(engine), directory, backend)
    async with found.uow() as uow:
        new = NewSupplier(SUPPLIER, SUPPLIER, "http://sim/a", Credentials("k", "s"))
        await uow.suppliers.add(SUPPLIER, new, datetime.now(UTC))
        await uow.commit()
    yield found
    await engine.dispose()


async def sending(db: Db, *so_ids: str) -> None:
    """Supplier orders committed `sending`, as routing leaves them for the dispatcher."""
    now = datetime.now(UTC)
    line = AllocatedLine("l1", "MUG", "A-MUG", 1, Decimal("3.00"), Decimal("9.00"), "USD")
    async with db.uow() as uow:
        await uow.supplier_orders.add_all(
            [SupplierOrder(i, f"ord-{i}", SUPPLIER, State.SENDING, [line], now) for i in so_ids]
        )
        await uow.commit()


async def mark_received(db: Db, *sent: tuple[str, str]) -> None:
    await dispatch.record_sent(db.uow(), list(sent))


async def overhead(db: Db) -> int:
    """Statements a unit of work sends with nothing in it (SQLite: its BEGIN)."""
    with round_trips(db.engine) as sent:
        async with db.uow() as uow:
            await uow.session.connection()
            await uow.commit()
    return sent.statements


async def test_placed_orders_are_marked_received_once_in_one_statement(db: Db) -> None:
    await sending(db, "so-1", "so-2")
    empty = await overhead(db)
    with round_trips(db.engine) as sent:
        await mark_received(db, ("so-1", "REF-1"), ("so-2", "REF-2"))
    assert sent.statements - empty == 1
    # PostgreSQL: the one statement is its own transaction (no BEGIN, no COMMIT)
    assert sent.transactions == (0 if db.backend == "postgresql" else 1)
    assert await db.state("so-1") == ("received", "REF-1")
    assert await db.state("so-2") == ("received", "REF-2")
    # again (a retried batch): no longer sending, so nothing changes
    await mark_received(db, ("so-1", "OTHER"))
    assert await db.state("so-1") == ("received", "REF-1")


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has one writer: nothing to skip
async def test_a_row_a_callback_holds_is_skipped_not_waited_for(db: Db) -> None:
    await sending(db, "so-1", "so-2")
    async with db.uow() as callback:  # a callback deciding so-1 holds its row
        assert await callback.supplier_orders.get("so-1", for_update=True) is not None
        await mark_received(db, ("so-1", "REF-1"), ("so-2", "REF-2"))
        assert await db.state("so-2") == ("received", "REF-2")
        assert await db.state("so-1") == ("sending", None)
        await callback.rollback()
    await mark_received(db, ("so-1", "REF-1"))  # the next batch gets it
    assert await db.state("so-1") == ("received", "REF-1")


async def track(db: Db, delivery: str, tracking: str, status: Any, at: datetime) -> Outcome:
    update = TrackingUpdate(tracking, status, at)
    return await callbacks.tracking_update(db.uow(), delivery, update)


async def test_in_transit_updates_record_movement_only_for_a_shipped_parcel(db: Db) -> None:
    await sending(db, "so-1")
    await mark_received(db, ("so-1", "REF-1"))
    for kind, delivery in (("accepted", "d-acc"), ("dispatched", "d-dis")):
        cb = SupplierCallback(kind, "so-1", "REF-1", None, "UPS", "1Z999")
        assert (await callbacks.supplier_callback(db.uow(), SUPPLIER, delivery, cb)).value == kind
    t0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)

    assert await track(db, "t-0", "NOPE", "in_transit", t0) is Outcome.UNKNOWN_TRACKING_NUMBER
    assert await db.movements() == {}
    assert await track(db, "t-0", "NOPE", "in_transit", t0) is Outcome.DUPLICATE

    empty = await overhead(db)
    with round_trips(db.engine) as sent:
        assert await track(db, "t-1", "1Z999", "in_transit", t0) is Outcome.RECORDED
    if db.backend == "postgresql":  # the delivery id and the guarded upsert in one statement
        assert (sent.statements, sent.transactions) == (1, 0)
    else:  # the delivery id, the guarded upsert, in one transaction
        assert (sent.statements - empty, sent.transactions) == (2, 1)
    assert await db.movements() == {"1Z999": t0}

    later = t0 + timedelta(hours=3)
    assert await track(db, "t-1", "1Z999", "in_transit", later) is Outcome.DUPLICATE
    assert await db.movements() == {"1Z999": t0}
    assert await track(db, "t-2", "1Z999", "in_transit", later) is Outcome.RECORDED
    assert await db.movements() == {"1Z999": later}

    assert await track(db, "t-3", "1Z999", "delivered", later) is Outcome.DELIVERED
    assert (await db.state("so-1"))[0] == "delivered"
    assert await track(db, "t-4", "1Z999", "in_transit", later) is Outcome.RECORDED


async def decide(db: Db, so_id: str, kind: str, delivery: str) -> str:
    cb = SupplierCallback(kind, so_id, f"REF-{so_id}", None, "UPS", f"TN-{so_id}")  # type: ignore[arg-type]
    return (await callbacks.supplier_callback(db.uow(), SUPPLIER, delivery, cb)).value


async def test_a_decision_clears_waiting_lines_and_sends_nothing_for_them_when_none_wait(
    db: Db,
) -> None:
    await sending(db, "so-1", "so-2")
    await mark_received(db, ("so-1", "REF-so-1"), ("so-2", "REF-so-2"))
    async with db.uow() as uow:  # so-1's line was routed again while it waited
        now = datetime.now(UTC)
        await uow.waiting.wait("ord-so-1", ["l1"], "timeout", now, retry_after_s=5, max_retry_s=60)
        await uow.commit()
    assert await db.waiting() == [("ord-so-1", "l1")]
    async with db.uow() as uow:  # the supplier's entry cached (its SLA), as when warm
        assert await uow.suppliers.entry(SUPPLIER) is not None
    with round_trips(db.engine) as waited:
        assert await decide(db, "so-1", "accepted", "d1") == "accepted"
    assert await db.waiting() == []

    with round_trips(db.engine) as sent:
        assert await decide(db, "so-2", "accepted", "d2") == "accepted"
    # no DELETE of waiting lines (on PostgreSQL one held back would also have sent the
    # save on its own, ahead of it, instead of with the commit's other writes)
    assert sent.statements < waited.statements
    assert await decide(db, "so-2", "accepted", "d2") == "duplicate"
    assert await decide(db, "so-2", "dispatched", "d3") == "dispatched"
    assert (await db.state("so-2"))[0] == "dispatched"


async def test_a_callback_records_its_delivery_id_and_loads_its_order_in_one_round_trip(
    db: Db,
) -> None:
    await sending(db, "so-1", "so-2")
    await mark_received(db, ("so-1", "REF-so-1"), ("so-2", "REF-so-2"))
    async with db.uow() as uow:  # the supplier's entry cached (its SLA), as when warm
        assert await uow.suppliers.entry(SUPPLIER) is not None
    empty = await overhead(db)
    with round_trips(db.engine) as sent:
        assert await decide(db, "so-1", "accepted", "d1") == "accepted"
    # PostgreSQL: the delivery id with the locked load, then the update, the tally and the
    # outbox row in one statement; SQLite: the delivery id apart, each write its own
    expected = 2 if db.backend == "postgresql" else 5
    assert sent.statements - empty == expected
    assert (await db.state("so-1"))[0] == "accepted"

    assert await decide(db, "so-1", "accepted", "d1") == "duplicate"
    assert await decide(db, "so-9", "accepted", "d9") == "unknown_order"
    assert await decide(db, "so-9", "accepted", "d9") == "duplicate"  # the id was kept
    assert await decide(db, "so-1", "dispatched", "d2") == "dispatched"

    t0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    assert await track(db, "t-1", "NOPE", "delivered", t0) is Outcome.UNKNOWN_TRACKING_NUMBER
    assert await track(db, "t-1", "NOPE", "delivered", t0) is Outcome.DUPLICATE
    assert await track(db, "t-2", "TN-so-1", "delivered", t0) is Outcome.DELIVERED
    assert await track(db, "t-2", "TN-so-1", "delivered", t0) is Outcome.DUPLICATE
    assert (await db.state("so-1"))[0] == "delivered"
    assert (await db.state("so-2"))[0] == "received"


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has one writer: nothing to wait on
async def test_a_redelivered_callback_waits_for_no_lock(db: Db) -> None:
    await sending(db, "so-1")
    await mark_received(db, ("so-1", "REF-so-1"))
    assert await decide(db, "so-1", "accepted", "d1") == "accepted"
    async with db.uow() as holder:  # another callback is deciding so-1
        assert await holder.supplier_orders.get("so-1", for_update=True) is not None
        assert await asyncio.wait_for(decide(db, "so-1", "accepted", "d1"), 5) == "duplicate"
        await holder.rollback()


def routing_request(order_id: str) -> RoutingRequest:
    now = datetime.now(UTC)
    line = Line("l1", "MUG", 1, Decimal("9.00"))
    return RoutingRequest(order_id, "USD", [line], "US", "10001", now, now)


async def test_placed_orders_of_any_chunk_size_are_kept_without_compiling_again(db: Db) -> None:
    """Chunks of 1, 3, 2 and 1 placed orders (one redelivered): SQLAlchemy compiles the
    insert once for one row and once for many, not once per chunk; a redelivered order is
    not kept twice."""
    compiled: list[Any] = []

    def seen(conn: Any, cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        if sql.startswith("INSERT INTO routing_request"):
            compiled.append(context.compiled)

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    kept: list[set[str]] = []
    for chunk in (["o1"], ["o2", "o3", "o4"], ["o4", "o5"], ["o6"]):
        async with db.uow() as uow:
            kept.append(await uow.routing_requests.add_many([routing_request(o) for o in chunk]))
            await uow.commit()
    event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    assert kept == [{"o1"}, {"o2", "o3", "o4"}, {"o5"}, {"o6"}]
    one, many, many_again, one_again = compiled
    assert (one_again is one, many_again is many, many is not one) == (True, True, True)


def grouped(db: Db, linger_ms: float) -> Any:
    """The supplier service's group commit of callbacks (each alone without a linger)."""
    settings = SupplierSettings(
        database_url="sqlite+aiosqlite://", supplier_callback_linger_ms=linger_ms
    )
    return webhooks.callback_groups(SimpleNamespace(uow=db.uow), settings)  # type: ignore[arg-type]


async def arrive(db: Db, linger_ms: float, *items: Recorded) -> list[Any]:
    """`items` arriving together at the service's callback routes: each answered alone."""
    groups = grouped(db, linger_ms)
    return list(await asyncio.gather(*map(groups.submit, items), return_exceptions=True))


def accepted(so_id: str, delivery: str) -> Recorded:
    callback = SupplierCallback("accepted", so_id, f"REF-{so_id}")
    return Recorded(delivery, SUPPLIER, callback)


@pytest.mark.parametrize("linger_ms", [0.0, 5.0])
async def test_callbacks_arriving_together_commit_together_each_with_its_answer(
    db: Db, linger_ms: float
) -> None:
    so_ids = [f"so-{i}" for i in range(5)]
    await sending(db, *so_ids)
    await mark_received(db, *((i, f"REF-{i}") for i in so_ids))
    t0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    with round_trips(db.engine) as sent:  # each item made in its "request's" context
        items = [accepted(i, f"d-{i}") for i in so_ids]
        items += [accepted("so-0", "d-so-0"), accepted("so-9", "d-9")]  # redelivered, unknown
        items.append(Recorded("t-1", None, TrackingUpdate("NOPE", "in_transit", t0)))
        answers = await arrive(db, linger_ms, *items)
    # the two copies of d-so-0 arrived together: whichever went first is applied
    first, again = sorted([answers.pop(5), answers.pop(0)])
    assert (first, again) == ("accepted", "duplicate")
    assert answers == ["accepted"] * 4 + ["unknown_order", "unknown_tracking_number"]
    for so_id in so_ids:
        assert (await db.state(so_id))[0] == "accepted"
    # one write transaction for the group; alone, one for each callback that changed
    # something (at least the five acceptances)
    if linger_ms:
        assert sent.transactions == 1
    else:
        assert sent.transactions >= 5

    again = await arrive(db, linger_ms, accepted("so-1", "d-so-1"), accepted("so-9", "d-9"))
    assert again == ["duplicate", "duplicate"]


def delivered(tracking: str, delivery: str) -> Recorded:
    return Recorded(delivery, None, TrackingUpdate(tracking, "delivered", datetime.now(UTC)))


async def test_a_group_records_its_delivery_ids_loads_and_saves_its_orders_set_based(
    db: Db,
) -> None:
    so_ids = [f"so-{i}" for i in range(5)]
    await sending(db, *so_ids)
    await mark_received(db, *((i, f"REF-{i}") for i in so_ids))
    async with db.uow() as uow:  # so-4 already on its way: its parcel is named by number
        so = await uow.supplier_orders.get("so-4", for_update=True)
        assert so is not None
        so.accept("REF-so-4", 48, datetime.now(UTC))
        so.dispatch("UPS", "TN-4", "REF-so-4", 48, datetime.now(UTC))
        await uow.supplier_orders.save(so)
        await uow.commit()
    sent: list[str] = []

    def seen(conn: Any, cursor: Any, sql: str, *_: Any) -> None:
        sent.append(" ".join(sql.split()))

    event.listen(db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        items = [accepted(i, f"d-{i}") for i in so_ids[:4]] + [delivered("TN-4", "t-4")]
        assert await arrive(db, 5.0, *items) == ["accepted"] * 4 + ["delivered"]
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", seen)
    # one statement records the five delivery ids, one locks and loads the five orders
    # (one by one, each callback sent its own, or its own two on SQLite); the changes go
    # in one statement per set of columns changed (the acceptances', the delivery's), or
    # on PostgreSQL all of them with the tallies and the outbox rows in one
    assert sum("INTO callback_delivery" in sql for sql in sent) == 1
    assert sum(sql.startswith("SELECT") and "FROM supplier_order" in sql for sql in sent) == 1
    if db.backend == "postgresql":
        assert sum(sql.startswith("WITH s AS ( UPDATE supplier_order") for sql in sent) == 1
        assert not [sql for sql in sent if sql.startswith(("UPDATE", "INSERT INTO outbox"))]
    else:
        assert sum(sql.startswith("UPDATE supplier_order") for sql in sent) == 2
    assert [(await db.state(i))[0] for i in so_ids] == ["accepted"] * 4 + ["delivered"]


async def test_each_callback_of_a_group_sees_what_the_ones_before_it_did(db: Db) -> None:
    await sending(db, "so-1", "so-2")
    await mark_received(db, ("so-1", "REF-so-1"), ("so-2", "REF-so-2"))
    await arrive(db, 0.0, accepted("so-1", "before"))  # a delivery id recorded before
    dispatched = SupplierCallback("dispatched", "so-1", "REF-so-1", None, "UPS", "TN-1")
    items = [
        Recorded("d-1", SUPPLIER, dispatched),  # so-1 ships under TN-1 ...
        delivered("TN-1", "t-1"),  # ... which its carrier then delivers, in the same group
        accepted("so-2", "d-2"),
        accepted("so-2", "d-2"),  # its delivery id twice in one group
        accepted("so-1", "before"),  # redelivered
        accepted("so-2", "d-3"),  # so-2 again, as the one before it left it
        delivered("TN-9", "t-9"),
    ]
    answers = await arrive(db, 5.0, *items)
    assert answers == [
        "dispatched",
        "delivered",
        "accepted",
        "duplicate",
        "duplicate",
        "ignored",
        "unknown_tracking_number",
    ]
    assert (await db.state("so-1"))[0] == "delivered"
    assert (await db.state("so-2"))[0] == "accepted"


async def received_with_a_fault(
    db: Db, monkeypatch: pytest.MonkeyPatch, so_ids: list[str], faulty: str, fault: Exception
) -> Any:
    """`so_ids` received by the supplier; deciding `faulty` raises `fault` (until the
    returned function is put back)."""
    await sending(db, *so_ids)
    await mark_received(db, *((i, f"REF-{i}") for i in so_ids))
    decide_for_real = callbacks._decide

    async def decide_or_fail(uow: Any, so: SupplierOrder, callback: SupplierCallback) -> Any:
        if so.id == faulty:
            raise fault
        return await decide_for_real(uow, so, callback)

    monkeypatch.setattr(callbacks, "_decide", decide_or_fail)
    return decide_for_real


async def test_a_callback_failing_in_a_group_fails_alone_and_the_others_commit(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    so_ids = ["so-1", "so-2", "so-3"]
    lost = ConnectionResetError("the database went away mid-callback")
    decide_for_real = await received_with_a_fault(db, monkeypatch, so_ids, "so-2", lost)
    with round_trips(db.engine) as sent:
        answers = await arrive(db, 5.0, *[accepted(i, f"d-{i}") for i in so_ids])
    assert answers[0] == "accepted" and answers[2] == "accepted"
    assert answers[1] is lost
    assert [(await db.state(i))[0] for i in so_ids] == ["accepted", "received", "accepted"]
    assert sent.transactions >= 3  # the group rolled back, then each alone

    monkeypatch.setattr(callbacks, "_decide", decide_for_real)
    # nothing of the failed one was kept, its delivery id neither: the sender's retry applies
    assert await arrive(db, 5.0, accepted("so-2", "d-so-2")) == ["accepted"]
    assert (await db.state("so-2"))[0] == "accepted"


async def test_a_group_locked_out_of_the_database_is_busy_as_a_whole(
    db: Db, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's write lock held past busy_timeout: alone, each callback would wait as long
    again, so every callback of the group gets the error (the route answers busy, or
    records it in the journal) and none is applied."""
    so_ids = ["so-1", "so-2", "so-3"]
    locked = OperationalError("UPDATE supplier_order", {}, Exception("database is locked"))
    await received_with_a_fault(db, monkeypatch, so_ids, "so-3", locked)
    answers = await arrive(db, 5.0, *[accepted(i, f"d-{i}") for i in so_ids])
    assert answers == [locked] * 3
    assert [(await db.state(i))[0] for i in so_ids] == ["received"] * 3


async def test_held_changes_tallies_and_outbox_rows_are_written_alike_on_both_databases(
    db: Db,
) -> None:
    """At commit the held saves, counter increments and outbox rows go together (one
    statement on PostgreSQL): each order gets exactly the columns it changed (a column
    another statement of the transaction wrote stays), the increments are appended, and
    the outbox rows handed to the relay are the table's, in the order they were emitted."""
    await sending(db, "so-1", "so-2")
    await mark_received(db, ("so-1", "REF-so-1"), ("so-2", "REF-so-2"))
    handed: list[Any] = []
    uow = SupplierUnitOfWork(
        db.sessions, on_commit=handed.extend, directory=db.directory, notify_others=no
    )
    now = datetime.now(UTC)
    async with uow:
        uow.supplier_orders.defer_saves()
        first = await uow.supplier_orders.get("so-1", for_update=True)
        second = await uow.supplier_orders.get("so-2", for_update=True)
        assert first is not None and second is not None
        await uow.session.execute(  # another statement of the transaction writes a column
            supplier_order.update().where(supplier_order.c.id == "so-1").values(carrier="DHL")
        )
        for so in (first, second):
            so.accept(None, 48, now)
            await uow.supplier_orders.save(so)
        await uow.commit()

    cols = supplier_order.c
    rows = await db.rows(
        select(cols.id, cols.state, cols.carrier, cols.sla_hours, cols.lease_until).order_by(
            cols.id
        )
    )
    assert [(r.id, r.state, r.carrier, r.sla_hours, r.lease_until) for r in rows] == [
        ("so-1", "accepted", "DHL", 48.0, None),
        ("so-2", "accepted", None, 48.0, None),
    ]
    tallies = await db.rows(select(supplier_tally))
    assert sum(t.decided for t in tallies) == 2 and sum(t.accepted for t in tallies) == 2
    assert {t.supplier_id for t in tallies} == {SUPPLIER}
    stored = await db.rows(select(outbox_table.c.id, outbox_table.c.key).order_by("id"))
    assert [(r.id, r.key) for r in handed] == [(r.id, r.key) for r in stored][-2:]
    assert [r.key for r in handed] == ["ord-so-1", "ord-so-2"]
