"""What a test sends through an engine: its statements and the transactions they ended.

A service's background loops (its outbox relay, its consumers) share the engine with the
requests a test makes, so the process-wide counters behind `/metrics` move under a test's
feet. `round_trips` counts only what runs in the test's own context: the test's task and
the tasks it starts while counting (a request served in process runs in them), never a
loop started before.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import ends_transaction


@dataclass
class RoundTrips:
    statements: int = 0
    transactions: int = 0
    """Transactions ended (committed or rolled back): two round trips each on PostgreSQL."""


_COUNTING: ContextVar[RoundTrips | None] = ContextVar("counting", default=None)


@contextmanager
def round_trips(engine: AsyncEngine) -> Iterator[RoundTrips]:
    """Count the statements and transactions this context sends through `engine`."""
    seen = RoundTrips()
    sync = engine.sync_engine

    def statement(*_: Any) -> None:
        if _COUNTING.get() is seen:
            seen.statements += 1

    def ended(conn: Connection) -> None:
        if _COUNTING.get() is seen and ends_transaction(conn):
            seen.transactions += 1

    listeners = [("before_cursor_execute", statement), ("commit", ended), ("rollback", ended)]
    for name, listener in listeners:
        event.listen(sync, name, listener)
    token = _COUNTING.set(seen)
    try:
        yield seen
    finally:
        _COUNTING.reset(token)
        for name, listener in listeners:
            event.remove(sync, name, listener)
