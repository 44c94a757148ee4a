"""Unit of work: one transaction that commits state, outbox rows and inbox rows together."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, NamedTuple, Self

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import faults, tracing
from shared.db import AUTOCOMMIT, READ_ONLY, outbox_table, sqlite_moment
from shared.events import Envelope, EventData, new_envelope

OUTBOX_CHANNEL = "dropship_outbox"
"""PostgreSQL NOTIFY channel that wakes outbox relays in other processes."""


class OutboxRow(NamedTuple):
    """One committed outbox row, as the relay reads it from the table or is handed it."""

    id: int
    topic: str
    key: str
    payload: bytes


CommitHook = Callable[[Sequence[OutboxRow]], None]
"""Called after a commit with the outbox rows it wrote (the relay's `wake`)."""


class OutboxTaken:
    """Events taken from a unit of work to be written to the outbox by a statement of the
    caller's (PostgreSQL: in one round trip with its other writes, `unnest` of `columns`).
    The caller reports the ids the rows got (`written`); the commit then hands them to the
    relay as if it had written them itself."""

    def __init__(self, envelopes: Sequence[Envelope]) -> None:
        self.envelopes = list(envelopes)
        self.payloads = [e.to_bytes() for e in self.envelopes]
        self.ids: list[int] | None = None

    def columns(self) -> dict[str, list[Any]]:
        """The rows as one list per `outbox_event` column (the payloads as bytes)."""
        return {
            "event_id": [e.id for e in self.envelopes],
            "topic": [e.type for e in self.envelopes],
            "key": [e.subject for e in self.envelopes],
            "payload": self.payloads,
        }

    def arrays(self) -> dict[str, list[Any]]:
        """`OUTBOX_PART_PG`'s parameters (all but `:now`)."""
        return {f"x_{name}": values for name, values in self.columns().items()}

    def records(self) -> list[dict[str, Any]]:
        """The rows as one dict per event, for a multi-row insert."""
        columns = self.columns()
        return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]

    def written(self, ids: Sequence[int]) -> None:
        """The rows are in the table, with these ids (in the order of `envelopes`)."""
        if len(ids) != len(self.envelopes):
            raise ValueError(f"{len(ids)} outbox ids for {len(self.envelopes)} rows")
        self.ids = [int(i) for i in ids]

    def rows(self) -> list[OutboxRow]:
        if self.ids is None:
            raise RuntimeError("taken outbox rows were never written")
        return [
            OutboxRow(i, e.type, e.subject, payload)
            for i, e, payload in zip(self.ids, self.envelopes, self.payloads, strict=True)
        ]


OUTBOX_PART_PG = (
    " INSERT INTO outbox_event (event_id, topic, key, payload, created_at)"
    " SELECT u.event_id, u.topic, u.key, u.payload, :now"
    " FROM unnest(CAST(:x_event_id AS text[]), CAST(:x_topic AS text[]),"
    " CAST(:x_key AS text[]), CAST(:x_payload AS bytea[]))"
    " WITH ORDINALITY AS u(event_id, topic, key, payload, n)"
    " ORDER BY u.n RETURNING id"  # ids follow the events' order
)
"""PostgreSQL: outbox rows as a data-modifying `WITH` part of a caller's statement, fed by
`OutboxTaken.arrays` and `:now`; `ARRAY(SELECT id FROM <part> ORDER BY id)` gives the ids
in the events' order, for `OutboxTaken.written`."""


_PG_CLAIM = text(
    "INSERT INTO inbox_event (consumer, event_id, topic, processed_at) "
    "SELECT :consumer, u.event_id, u.topic, :now "
    "FROM unnest(CAST(:ids AS text[]), CAST(:topics AS text[])) AS u(event_id, topic) "
    "ON CONFLICT DO NOTHING RETURNING event_id"
)
_SQLITE_CLAIM = (
    "INSERT INTO inbox_event (consumer, event_id, topic, processed_at) "
    "SELECT ?, json_extract(value, '$[0]'), json_extract(value, '$[1]'), ? "
    "FROM json_each(?) WHERE true ON CONFLICT DO NOTHING RETURNING event_id"
)
"""Claim a batch in one fixed statement: the ids (and their topics) bound as one array
(PostgreSQL) or one JSON text (SQLite), not a row of parameters per event."""


class UnitOfWork:
    """Async context manager around one session and one transaction.

    Handlers record events with `emit`; `commit` writes them to the outbox in the
    same transaction as the state change, so an event exists if and only if the
    change does. Nothing is published here: the relay does that. After the commit,
    `on_commit` is handed the rows written (with their ids), so the relay in this
    process can publish them without reading them back; the table stays the truth.
    Services subclass it to add repositories bound to `self.session`.
    """

    session: AsyncSession

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        on_commit: CommitHook | None = None,
        notify_others: Callable[[], bool] = lambda: True,
    ) -> None:
        self._sessions = sessions
        self._on_commit = on_commit
        self._notify_others = notify_others
        self._pending: list[Envelope] = []
        self._taken: list[OutboxTaken] = []
        self.committed = False
        self._single = False

    async def __aenter__(self) -> Self:
        self.session = self._sessions()
        self._pending = []
        self._taken = []
        self.committed = False
        self._single = False
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self.committed:
                await self.session.rollback()
        finally:
            await self.session.close()

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    async def single_statement(self, *, reads: bool = False) -> None:
        """Say, before the first statement, that this unit of work sends one statement and
        emits nothing.

        PostgreSQL then runs it in autocommit: one statement is atomic and reads one
        snapshot on its own, so `BEGIN` and `COMMIT` would be two round trips that buy
        nothing. `reads=True` (it writes nothing) also spares SQLite's write lock: a
        deferred `BEGIN`, as `READ_ONLY` gives. SQLite's writes keep their transaction.
        """
        self._single = True
        if self.dialect == "postgresql":
            await self.session.connection(execution_options={"isolation_level": AUTOCOMMIT})
        elif reads:
            await self.session.connection(execution_options={READ_ONLY: True})

    def emit(self, data: EventData, *, time: datetime | None = None) -> Envelope:
        """Record an event to be written to the outbox when the unit of work commits."""
        envelope = new_envelope(data, traceparent=tracing.for_event(), time=time)
        self._pending.append(envelope)
        return envelope

    @property
    def emitted(self) -> list[Envelope]:
        return list(self._pending)

    def take_outbox(self) -> OutboxTaken:
        """The events emitted so far, for the caller to write to the outbox in a statement of
        its own; `commit` writes only those emitted after, and fails if the caller did not
        report the taken rows `written`."""
        taken = OutboxTaken(self._pending)
        self._pending = []
        self._taken.append(taken)
        return taken

    async def claim_many(self, consumer: str, envelopes: Sequence[Envelope]) -> list[bool]:
        """Claim a batch in one statement; per envelope, False if already processed.

        `INSERT ... ON CONFLICT DO NOTHING RETURNING` reports exactly the ids this
        transaction claimed, so a concurrent claim of the same id elsewhere is a
        duplicate here, never an error. An id repeated inside the batch is fresh only
        the first time.
        """
        if not envelopes:
            return []
        ids: dict[str, str] = {}
        for e in envelopes:
            ids.setdefault(e.id, e.type)
        now = datetime.now(UTC)
        if self.dialect == "postgresql":
            result = await self.session.execute(
                _PG_CLAIM,
                {"consumer": consumer, "ids": list(ids), "topics": list(ids.values()), "now": now},
            )
        else:
            connection = await self.session.connection()
            result = await connection.exec_driver_sql(
                _SQLITE_CLAIM, (consumer, sqlite_moment(now), json.dumps(list(ids.items())))
            )
        claimed = {row[0] for row in result}
        fresh: list[bool] = []
        for e in envelopes:
            fresh.append(e.id in claimed)
            claimed.discard(e.id)
        return fresh

    async def commit(self) -> None:
        if self._single and self._pending:  # the outbox rows would not share its fate
            raise RuntimeError("a single-statement unit of work cannot emit events")
        if self._pending:  # what the caller did not take: written here, in one statement
            own = self.take_outbox()
            now = datetime.now(UTC)
            ids = await self.session.scalars(
                insert(outbox_table).returning(outbox_table.c.id, sort_by_parameter_order=True),
                [{**record, "created_at": now} for record in own.records()],
            )
            own.written(ids.all())
        rows = [row for taken in self._taken for row in taken.rows()]
        if rows and self.dialect == "postgresql" and self._notify_others():
            # the relay leads in another process: wake it (ours is woken in-process)
            await self.session.execute(text(f"NOTIFY {OUTBOX_CHANNEL}"))
        await self.session.commit()
        self.committed = True
        self._pending = []
        self._taken = []
        if rows:
            faults.crash_point("uow.after_commit")  # committed, not yet published
            if self._on_commit is not None:
                self._on_commit(rows)

    async def rollback(self) -> None:
        self._pending = []
        self._taken = []
        await self.session.rollback()
