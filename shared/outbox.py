"""The outbox relay: publishes committed outbox rows in commit order, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from opentelemetry.trace import Span, SpanKind
from sqlalchemy import delete, func, select, text, true, update
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    wait_exponential_jitter,
)

from shared import faults, relay_lock, tracing
from shared.bus import OutgoingMessage, Publisher
from shared.db import READ_ONLY, outbox_table
from shared.idle import Backoff
from shared.uow import OutboxRow

log = logging.getLogger(__name__)

# names from our own table definitions, never from input
_IN_ORDER_PG = text(
    f"WITH marked AS (UPDATE {outbox_table.name} AS o SET published_at = :at"  # noqa: S608
    " FROM unnest(CAST(:marked AS bigint[])) AS m(id) WHERE o.id = m.id)"
    f" SELECT ({relay_lock.HELD_SQL}), (SELECT count(*) FROM {outbox_table.name}"
    " WHERE published_at IS NULL AND id < :newest AND id <> ALL(CAST(:ids AS bigint[]))"
    " AND id <> ALL(CAST(:marked AS bigint[]))),"
    f" (SELECT count(*) FROM {outbox_table.name}"
    " WHERE id = ANY(CAST(:ids AS bigint[]))"
    " AND (published_at IS NOT NULL OR id = ANY(CAST(:marked AS bigint[]))))"
)
"""PostgreSQL, before a handed batch goes out: the rows published since the last mark
marked (`:marked`, maybe none), whether the lock is still held, how many older rows are
unpublished but not in the batch, and how many of the batch went out already, marked or
among `:marked` (a table read that ran between a commit and its hand-off sent them; built
once: run on every batch). The counts read the statement's snapshot, from before its own
marking, so the first leaves the marked ids out itself."""
_MARK_PG = text(
    # a join with the ids, not `id = ANY(:ids)`: an index lookup per id whatever the
    # prepared statement's generic plan estimates for the array
    f"UPDATE {outbox_table.name} AS o SET published_at = :at"  # noqa: S608
    " FROM unnest(CAST(:ids AS bigint[])) AS i(id) WHERE o.id = i.id"
)
"""PostgreSQL: a batch marked published (built once, the ids one array)."""


class LeadershipLost(Exception):
    """The relay's lock is gone (its database connection dropped): stop publishing."""


class OutboxRelay:
    """Moves outbox rows to the broker.

    - One relay per service publishes at a time (a PostgreSQL advisory lock, or a
      file lock beside a SQLite database); others stand by, so per-key order holds.
    - Rows go out in id order, which for one order id is commit order (its
      transactions serialise on the order's row).
    - Wakes on `wake()` (same process) or PostgreSQL NOTIFY (other processes), and
      polls every `poll_interval` as a safety net (up to `idle_backoff` times slower
      while polls find nothing: `shared.idle.Backoff`). Woken from idle, it waits `linger`
      seconds first, so commits close behind one another go out (and are marked) together.
    - In-memory hand-off: a unit of work in this process hands its committed rows to
      `wake(rows)`, and the leader publishes them without reading them back, once it knows
      no older unpublished row is missing from its hand (else it reads the table, as it
      does after a NOTIFY, a poll or taking the lead). PostgreSQL: the lock check that
      precedes every batch also counts older unpublished rows not in hand. SQLite (whose
      ids follow commit order): the handed ids must directly follow the highest id known
      to be published. The table stays the truth: anything not marked goes out on a pass.
    - Marks published rows with one UPDATE, up to `mark_delay` seconds after they went
      out: on PostgreSQL the mark rides on the next batch's lock check (one statement),
      and on SQLite the batches published meanwhile share one write. The marks are sent
      before any read of the table, when the delay is up, and when the relay stops
      leading on its own; on PostgreSQL the reads, lock checks and marks run on the lock's
      own connection in autocommit (one round trip each).
    - On broker failure it retries with jittered backoff; rows stay until acknowledged,
      so a crash between publish and marking (up to `mark_delay` later) re-sends them
      (consumers dedupe).
    - The PostgreSQL lock is held by one connection's session: if that connection drops
      (a database restart), the lock is gone and another relay may take it. So before every
      batch the leader asks on that very connection whether it still holds the lock, and
      on any doubt stops publishing and stands by again (`LeadershipLost`).
    - On taking the lead it asks the broker how many messages each of its topics holds:
      fewer than the outbox has published (the embedded broker keeps nothing across a
      restart) means the broker forgot them, so the kept published rows go out again.
    """

    def __init__(
        self,
        service: str,
        engine: AsyncEngine,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        idle_backoff: float = 8.0,
        retention: timedelta = timedelta(days=7),
        tracer: tracing.Tracing | None = None,
        topic_sizes: Callable[[Sequence[str]], Awaitable[dict[str, int]]] | None = None,
        hand_off: bool = True,
        hand_off_max: int = 10_000,
        linger: float = 0.0,
        mark_delay: float = 0.5,
    ) -> None:
        self.service = service
        self._engine = engine
        self._sessions = sessions
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._idle_backoff = idle_backoff
        self._retention = retention
        self._tracer = tracer or tracing.DISABLED
        self._topic_sizes = topic_sizes
        self._wake = asyncio.Event()
        self.published_total = 0
        self.leading = False
        self._lock_conn: AsyncConnection | None = None
        self._lock_key = relay_lock.lock_key(service)
        self._hand_off = hand_off
        self._hand_off_max = hand_off_max
        self._linger = linger
        self._handed: list[OutboxRow] = []
        self._read_table = True
        """The table may hold unpublished rows the hand-off does not: read it next pass."""
        self._top: int | None = None
        """SQLite: every row with an id up to this one is published (or will never exist)."""
        self._mark_delay = mark_delay
        self._unmarked: list[int] = []
        """Ids published and not yet marked: the table still has them unpublished."""
        self._marks_due = 0.0
        """The event loop's time by which `_unmarked` must be marked."""
        self.handed_published = 0
        self.passes = 0

    def wake(self, committed: Sequence[OutboxRow] = ()) -> None:
        """Publish soon; `committed` are outbox rows this process has just committed."""
        if not committed or not (self.leading and self._hand_off):
            self._read_table = True
        elif len(self._handed) + len(committed) > self._hand_off_max:
            self._handed.clear()  # the table has them all
            self._read_table = True
        else:
            self._handed.extend(committed)
        self._wake.set()

    async def run(self) -> None:
        """Publish until cancelled; lead again after losing the lock."""
        while True:
            try:
                await self._run_leading()
            except LeadershipLost as exc:
                log.warning("outbox relay lost its lock, standing by", extra={"error": str(exc)})
            except (OSError, OperationalError, DBAPIError) as exc:  # database away meanwhile
                log.warning("outbox relay cannot lead now", extra={"error": repr(exc)})
            await asyncio.sleep(self._poll_interval)

    async def _run_leading(self) -> None:
        async with self._leadership():
            self.leading = True
            self._handed.clear()
            self._read_table = True
            self._top = None
            log.info("outbox relay leading", extra={"service": self.service})
            try:
                await self.republish_forgotten()
            except Exception as exc:  # the broker or database is away: normal relaying retries
                log.warning(
                    "could not compare the outbox with the broker", extra={"error": repr(exc)}
                )
            try:
                await self._relay()
            except LeadershipLost:
                self._unmarked.clear()  # the next leader publishes them again
                raise
            finally:
                await self._mark_on_leaving()

    async def _relay(self) -> None:
        last_purge = datetime.now(UTC)
        poll = Backoff(self._poll_interval, self._idle_backoff)
        while True:
            self._wake.clear()
            published = await self._publish_with_retry()
            self.passes += 1
            if published >= self._batch_size:
                continue
            if datetime.now(UTC) - last_purge > timedelta(minutes=10):
                await self.purge()
                last_purge = datetime.now(UTC)
            if await self._wait(poll.found(published > 0)):
                poll.woken()
                if self._linger > 0:  # let commits close behind this one join its batch
                    await asyncio.sleep(self._linger)
            else:
                self._read_table = True  # the safety-net poll

    async def _wait(self, seconds: float) -> bool:
        """Wait up to `seconds` for `wake()`, marking published rows meanwhile when
        their delay is up; whether it was woken."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            until = min(deadline, self._marks_due) if self._unmarked else deadline
            with contextlib.suppress(TimeoutError):  # 3.11 wait_for can lose a cancel
                async with asyncio.timeout_at(until):
                    await self._wake.wait()
            if self._wake.is_set():
                return True
            if self._unmarked and loop.time() >= self._marks_due:
                try:
                    await self._mark_unmarked()
                except LeadershipLost:
                    raise
                except Exception as exc:  # SQLite busy, say: they stay unmarked, try again
                    log.warning("could not mark published rows", extra={"error": repr(exc)})
                    self._marks_due = loop.time() + self._poll_interval
            elif loop.time() >= deadline:
                return False

    async def _mark_on_leaving(self) -> None:
        """Mark what went out before the lock goes (a stop, a lost database): what is not
        marked, the next leader publishes again."""
        if not self._unmarked:
            return
        try:
            async with asyncio.timeout(2):
                await self._mark_unmarked()
        except Exception as exc:
            log.warning("published rows left unmarked", extra={"error": repr(exc)})
        finally:
            self._unmarked.clear()

    async def _publish_with_retry(self) -> int:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(Exception) & retry_if_not_exception_type(LeadershipLost),
            wait=wait_exponential_jitter(multiplier=0.1, max=5.0, jitter=0.1),
            before_sleep=lambda state: log.warning(
                "outbox publish failed, retrying",
                extra={
                    "attempt": state.attempt_number,
                    "error": repr(state.outcome.exception() if state.outcome else None),
                },
            ),
        ):
            with attempt:
                return await self.publish_pending()
        raise AssertionError("unreachable")

    async def publish_pending(self) -> int:
        """Publish one batch, handed over or read from the table; returns how many went out."""
        if self._handed and not self._read_table:
            self._handed.sort()
            batch = self._handed[: self._batch_size]
            del self._handed[: len(batch)]
            try:
                if await self._in_order(batch):
                    await self._publish(batch)
                    self.handed_published += len(batch)
                    if self._lock_conn is None:
                        self._top = batch[-1].id
                    return len(batch)
            except BaseException:
                self._read_table = True  # the retry reads the table: nothing handed is lost
                raise
            self._read_table = True  # an older row is missing from the hand: read the table
        return await self._publish_table()

    async def _in_order(self, batch: Sequence[OutboxRow]) -> bool:
        """Whether no unpublished row older than the newest in `batch` is missing from it,
        and none of it went out already (PostgreSQL: asked together with the lock check;
        SQLite: ids follow commit order, and the batch must follow the highest id out)."""
        if self._lock_conn is None:
            top = self._top
            return top is not None and [r.id for r in batch] == list(
                range(top + 1, top + 1 + len(batch))
            )
        ids, marked = [r.id for r in batch], list(self._unmarked)
        params = {
            "k": self._lock_key,
            "newest": batch[-1].id,
            "ids": ids,
            "marked": marked,
            "at": datetime.now(UTC),
        }
        held, missing, sent = (await self._on_lock_conn(_IN_ORDER_PG, params))[0]
        del self._unmarked[: len(marked)]
        if not held:
            raise LeadershipLost("advisory lock no longer held")
        return not missing and not sent

    async def _publish_table(self) -> int:
        self._handed.clear()  # all committed before now, so the read below sees them
        self._read_table = False
        try:
            await self._mark_unmarked()  # else the read finds them unpublished
            rows, top = await self._read_pending()
            if len(rows) >= self._batch_size:
                self._read_table = True
            if rows:
                await self._publish(rows)
        except BaseException:
            self._read_table = True
            raise
        read = {r.id for r in rows}  # handed over while being read: out already
        self._handed = [r for r in self._handed if r.id not in read]
        if self._lock_conn is None:
            self._top = rows[-1].id if len(rows) >= self._batch_size else top
        return len(rows)

    async def _read_pending(self) -> tuple[list[OutboxRow], int | None]:
        """The oldest unpublished rows, in one statement with (PostgreSQL) the lock check or
        (SQLite) the highest id in the table."""
        pending = (
            select(outbox_table.c.id, outbox_table.c.topic, outbox_table.c.key)
            .add_columns(outbox_table.c.payload)
            .where(outbox_table.c.published_at.is_(None))
            .order_by(outbox_table.c.id)
            .limit(self._batch_size)
            .subquery()
        )
        pg = self._lock_conn is not None
        top = func.coalesce(func.max(outbox_table.c.id), 0)  # rowids start at 1
        head = select((relay_lock.held(self._lock_key) if pg else top).label("head"))
        first = head.subquery()
        stmt = (
            select(first.c.head, pending.c.id, pending.c.topic, pending.c.key, pending.c.payload)
            .select_from(first.outerjoin(pending, true()))
            .order_by(pending.c.id)
        )
        if pg:
            found = await self._on_lock_conn(stmt)
            if not found or not found[0][0]:
                raise LeadershipLost("advisory lock no longer held")
        else:
            async with self._engine.connect() as conn:
                await conn.execution_options(**{READ_ONLY: True})
                found = list((await conn.execute(stmt)).all())
                await conn.rollback()
        rows = [OutboxRow(int(r[1]), r[2], r[3], r[4]) for r in found if r[1] is not None]
        highest = found[0][0] if found and not pg else None
        return rows, None if highest is None else int(highest)

    async def _on_lock_conn(self, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """Run `stmt` on the lock's connection (autocommit: no BEGIN or COMMIT round trips);
        any failure means the lock may be gone."""
        conn = self._lock_conn
        if conn is None:
            raise LeadershipLost("not leading")
        try:
            async with asyncio.timeout(5):
                result = await conn.execute(stmt, params)
                return list(result.all()) if result.returns_rows else []
        except Exception as exc:
            raise LeadershipLost(f"lock connection unusable: {exc!r}") from exc

    async def _publish(self, rows: Sequence[OutboxRow]) -> None:
        """Send `rows` and mark them published (one UPDATE)."""
        with tracing.ending(self._producer_spans(rows) if self._tracer.recording else []):
            await self._publisher.send_batch(
                [OutgoingMessage(topic=r.topic, key=r.key.encode(), value=r.payload) for r in rows]
            )
        faults.crash_point("relay.after_publish")
        if not self._unmarked:
            self._marks_due = asyncio.get_running_loop().time() + self._mark_delay
        self._unmarked.extend(r.id for r in rows)
        self.published_total += len(rows)
        if self._mark_delay <= 0 or len(self._unmarked) >= self._batch_size:
            await self._mark_unmarked()

    async def _mark_unmarked(self) -> None:
        """Mark the rows published since the last mark (one UPDATE)."""
        if not self._unmarked:
            return
        ids, now = list(self._unmarked), datetime.now(UTC)
        if self._lock_conn is not None:  # autocommit: one round trip
            await self._on_lock_conn(_MARK_PG, {"at": now, "ids": ids})
        else:
            mark = update(outbox_table).where(outbox_table.c.id.in_(ids)).values(published_at=now)
            async with self._sessions() as session:
                await session.execute(mark)
                await session.commit()
        del self._unmarked[: len(ids)]

    async def republish_forgotten(self) -> int:
        """Mark published rows unpublished again for topics the broker holds fewer messages
        of than we published; returns how many rows will go out again."""
        if self._topic_sizes is None:
            return 0
        async with self._sessions() as session:
            rows = await session.execute(
                select(outbox_table.c.topic, func.count())
                .where(outbox_table.c.published_at.is_not(None))
                .group_by(outbox_table.c.topic)
            )
            published = {str(topic): int(count) for topic, count in rows}
            await session.rollback()
        if not published:
            return 0
        sizes = await self._topic_sizes(sorted(published))
        forgotten = [t for t, count in published.items() if sizes.get(t, 0) < count]
        if not forgotten:
            return 0
        async with self._sessions() as session:
            await session.execute(
                update(outbox_table)
                .where(
                    outbox_table.c.published_at.is_not(None), outbox_table.c.topic.in_(forgotten)
                )
                .values(published_at=None)
            )
            await session.commit()
        again = sum(published[t] for t in forgotten)
        log.warning(
            "the broker lost published events: publishing them again",
            extra={"service": self.service, "topics": forgotten, "rows": again},
        )
        return again

    def _producer_spans(self, rows: Sequence[Any]) -> list[Span]:
        """One producer span per message, a child of the context its envelope carries."""
        spans = []
        for row in rows:
            try:
                envelope = json.loads(row.payload)
            except ValueError:
                envelope = {}
            span = self._tracer.start_span(
                f"{row.topic} publish",
                SpanKind.PRODUCER,
                envelope.get("traceparent"),
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "publish",
                    "messaging.destination.name": row.topic,
                    "messaging.message.id": str(envelope.get("id", "")),
                    "messaging.kafka.message.key": row.key,
                    "messaging.batch.message_count": len(rows),
                },
            )
            if span is not None:
                spans.append(span)
        return spans

    async def backlog(self) -> int:
        """Rows not yet published (a read: SQLite's write lock is not taken); rows this
        relay published whose mark is still to come do not count."""
        unmarked = list(self._unmarked)
        pending = [outbox_table.c.published_at.is_(None)]
        if unmarked:
            pending.append(outbox_table.c.id.not_in(unmarked))
        async with self._sessions() as session:
            await session.connection(execution_options={READ_ONLY: True})
            count = await session.scalar(
                select(func.count()).select_from(outbox_table).where(*pending)
            )
            await session.rollback()
        return int(count or 0)

    async def purge(self) -> None:
        """Delete rows published longer ago than the retention period."""
        cutoff = datetime.now(UTC) - self._retention
        async with self._sessions() as session:
            await session.execute(
                delete(outbox_table).where(
                    outbox_table.c.published_at.is_not(None), outbox_table.c.published_at < cutoff
                )
            )
            await session.commit()
        self._top = None  # SQLite may reuse the ids of deleted rows

    @contextlib.asynccontextmanager
    async def _leadership(self) -> AsyncIterator[None]:
        try:
            async with relay_lock.lead(self._engine, self._lock_key, self.wake) as conn:
                self._lock_conn = conn
                yield
        finally:
            self._lock_conn = None
            self.leading = False
            self._handed.clear()
