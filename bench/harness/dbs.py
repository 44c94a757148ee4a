"""Databases a benchmark uses: fresh ones per run, counts, and PostgreSQL's own statistics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from bench.harness.procs import postmaster_pid

BACKENDS = ("sqlite", "postgresql")


def pg_server() -> str:
    """The deploy.testenv PostgreSQL server's URL, or "" outside deploy.testenv."""
    return os.environ.get("DROPSHIP_TEST_PG_URL", "")


def dsn(url: str) -> str:
    """An asyncpg DSN from a SQLAlchemy URL."""
    return url.replace("postgresql+asyncpg://", "postgresql://")


def db_root(backend: str) -> int | None:
    """The postmaster whose CPU counts as the database's (None on SQLite: it is in-process)."""
    server = pg_server()
    return postmaster_pid(server) if backend == "postgresql" and server else None


@contextlib.asynccontextmanager
async def databases(backend: str, names: Sequence[str]) -> AsyncIterator[dict[str, str]]:
    """Fresh empty database URLs, one per name, dropped/removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="dropship-bench-") as tmp:
            yield {n: f"sqlite+aiosqlite:///{Path(tmp) / (n + '.db')}" for n in names}
        return
    server = pg_server()
    if not server:
        raise SystemExit("postgresql backend needs DROPSHIP_TEST_PG_URL (run under deploy.testenv)")
    base = server.rsplit("/", 1)[0]
    created = {n: f"bench_{uuid.uuid4().hex[:10]}_{n}" for n in names}
    conn = await asyncpg.connect(dsn(server))
    try:
        for db in created.values():
            await conn.execute(f'CREATE DATABASE "{db}"')
    finally:
        await conn.close()
    try:
        yield {n: f"{base}/{db}" for n, db in created.items()}
    finally:
        conn = await asyncpg.connect(dsn(server))
        try:
            for db in created.values():
                await conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        finally:
            await conn.close()


async def server_version() -> str:
    server = pg_server()
    if not server:
        return "-"
    conn = await asyncpg.connect(dsn(server))
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


async def scalar(url: str, sql: str) -> int:
    """One integer from the database behind a SQLAlchemy URL (without taking write locks)."""
    if make_url(url).get_backend_name() == "sqlite":
        path = make_url(url).database or ""

        def read() -> int:
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
            try:
                return int(conn.execute(sql).fetchone()[0])
            finally:
                conn.close()

        return await asyncio.to_thread(read)
    conn = await asyncpg.connect(dsn(url))
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def pg_stats(url: str) -> str:
    """Deadlocks, rollbacks and commits PostgreSQL counted in the database."""
    conn = await asyncpg.connect(dsn(url))
    try:
        row = await conn.fetchrow(
            "SELECT deadlocks, xact_rollback, xact_commit FROM pg_stat_database "
            "WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return (
        f"deadlocks {row['deadlocks']}, rollbacks {row['xact_rollback']}, "
        f"commits {row['xact_commit']}"
    )


class WaitSampler:
    """Samples pg_stat_activity of one database every 100 ms (PostgreSQL only).

    Per phase: how many of the service's connections were running a statement, waiting
    on a lock, or idle inside an open transaction, on average, and which statements
    waited on locks most often.
    """

    def __init__(self, url: str) -> None:
        self.dsn = dsn(url)
        self.task: asyncio.Task[None] | None = None
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.states: Counter[str] = Counter()
        self.waiting: Counter[str] = Counter()

    async def start(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        self.task = asyncio.create_task(self._run(conn), name="bench-pg-waits")

    async def _run(self, conn: asyncpg.Connection) -> None:
        try:
            while True:
                rows = await conn.fetch(
                    "SELECT state, wait_event_type, wait_event, left(query, 60) AS query "
                    "FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                self.samples += 1
                for r in rows:
                    if r["wait_event_type"] == "Lock":
                        self.states["lock wait"] += 1
                        self.waiting[" ".join(r["query"].split())] += 1
                    elif r["state"] == "active":
                        self.states["active"] += 1
                    elif r["state"] == "idle in transaction":
                        self.states["idle in txn"] += 1
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def summary(self) -> str:
        if not self.samples:
            return "no samples"
        n = self.samples
        parts = [f"{k} {self.states[k] / n:.1f}" for k in ("active", "lock wait", "idle in txn")]
        line = "pg connections (mean): " + ", ".join(parts)
        total = sum(self.waiting.values())
        if total:
            top = "; ".join(f"{100 * c / total:.0f}% {q}" for q, c in self.waiting.most_common(3))
            line += f"; lock waits on: {top}"
        return line

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
