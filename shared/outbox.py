"""The outbox relay: publishes committed outbox rows in commit order, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from opentelemetry.trace import Span, SpanKind, StatusCode
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    retry_if_not_exception_type,
    wait_exponential_jitter,
)

from shared import faults, tracing
from shared.bus import OutgoingMessage, Publisher
from shared.db import outbox_table
from shared.idle import Backoff
from shared.uow import OUTBOX_CHANNEL

log = logging.getLogger(__name__)


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
      while polls find nothing: `shared.idle.Backoff`).
    - On broker failure it retries with jittered backoff; rows stay until acknowledged,
      so a crash between publish and marking re-sends them (consumers dedupe).
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
        self._lock_key = zlib.crc32(f"outbox-relay:{service}".encode())

    def wake(self) -> None:
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
            log.info("outbox relay leading", extra={"service": self.service})
            try:
                await self.republish_forgotten()
            except Exception as exc:  # the broker or database is away: normal relaying retries
                log.warning(
                    "could not compare the outbox with the broker", extra={"error": repr(exc)}
                )
            last_purge = datetime.now(UTC)
            poll = Backoff(self._poll_interval, self._idle_backoff)
            while True:
                self._wake.clear()
                published = await self._publish_with_retry()
                if published >= self._batch_size:
                    continue
                if datetime.now(UTC) - last_purge > timedelta(minutes=10):
                    await self.purge()
                    last_purge = datetime.now(UTC)
                with contextlib.suppress(TimeoutError):  # 3.11 wait_for can lose a cancel
                    async with asyncio.timeout(poll.found(published > 0)):
                        await self._wake.wait()
                if self._wake.is_set():
                    poll.woken()

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
        """Publish one batch of unpublished rows; returns how many went out."""
        async with self._sessions() as session:
            rows = (
                await session.execute(
                    select(
                        outbox_table.c.id,
                        outbox_table.c.topic,
                        outbox_table.c.key,
                        outbox_table.c.payload,
                    )
                    .where(outbox_table.c.published_at.is_(None))
                    .order_by(outbox_table.c.id)
                    .limit(self._batch_size)
                )
            ).all()
            await session.rollback()
        if not rows:
            return 0
        await self._check_leading()
        spans = self._producer_spans(rows) if self._tracer.recording else []
        try:
            await self._publisher.send_batch(
                [OutgoingMessage(topic=r.topic, key=r.key.encode(), value=r.payload) for r in rows]
            )
        except Exception as exc:
            for span in spans:
                span.record_exception(exc)
                span.set_status(StatusCode.ERROR)
            raise
        finally:
            for span in spans:
                span.end()
        faults.crash_point("relay.after_publish")
        async with self._sessions() as session:
            await session.execute(
                update(outbox_table)
                .where(outbox_table.c.id.in_([r.id for r in rows]))
                .values(published_at=datetime.now(UTC))
            )
            await session.commit()
        self.published_total += len(rows)
        return len(rows)

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
        async with self._sessions() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(outbox_table)
                .where(outbox_table.c.published_at.is_(None))
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

    @contextlib.asynccontextmanager
    async def _leadership(self) -> AsyncIterator[None]:
        try:
            async with self._lead():
                yield
        finally:
            self.leading = False

    @contextlib.asynccontextmanager
    async def _lead(self) -> AsyncIterator[None]:
        if self._engine.dialect.name == "postgresql":
            conn = await self._engine.connect()
            try:
                await self._pg_lead(conn)
                self._lock_conn = conn
                yield
            finally:
                self._lock_conn = None
                with contextlib.suppress(Exception):
                    await conn.execute(text("SELECT pg_advisory_unlock_all()"))
                with contextlib.suppress(Exception):
                    await conn.close()
        else:
            async with self._file_lock():
                yield

    async def _check_leading(self) -> None:
        """Raise `LeadershipLost` unless the lock connection still holds the lock."""
        conn = self._lock_conn
        if conn is None:
            return  # SQLite: the file lock lives as long as the process
        try:
            async with asyncio.timeout(5):
                held = await conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND pid = pg_backend_pid() AND granted AND classid = 0"
                        " AND objid::text::bigint = :k AND objsubid = 1"
                    ),
                    {"k": self._lock_key},
                )
                await conn.rollback()
        except Exception as exc:
            raise LeadershipLost(f"lock connection unusable: {exc!r}") from exc
        if not held:
            raise LeadershipLost("advisory lock no longer held")

    async def _pg_lead(self, conn: AsyncConnection) -> None:
        key = self._lock_key
        while not await conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}):
            await conn.rollback()
            await asyncio.sleep(2.0)
        await conn.commit()
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        await driver.add_listener(OUTBOX_CHANNEL, lambda *_: self.wake())

    @contextlib.asynccontextmanager
    async def _file_lock(self) -> AsyncIterator[None]:
        database = make_url(str(self._engine.url)).database or ""
        if not database or database == ":memory:":
            yield
            return
        path = Path(database + ".relay.lock")
        with path.open("a+") as handle:  # noqa: ASYNC230 - opening a lock file is instant
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(2.0)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
