"""The cost model's counters: every statement and transaction an engine runs is counted."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY
from sqlalchemy import text

from shared.db import create_engine


def counted() -> tuple[float, float, float]:
    """What `/metrics` shows: statements, commits, rollbacks."""
    value = REGISTRY.get_sample_value
    return (
        value("dropship_db_statements_total") or 0.0,
        value("dropship_db_transactions_total", {"outcome": "commit"}) or 0.0,
        value("dropship_db_transactions_total", {"outcome": "rollback"}) or 0.0,
    )


async def test_statements_and_transactions_are_counted(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    try:
        async with engine.begin() as conn:  # warm up: connect-time pragmas are not counted
            await conn.execute(text("CREATE TABLE t (n INTEGER)"))
        before = counted()
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO t VALUES (:n)"), [{"n": 1}, {"n": 2}])
            await conn.execute(text("SELECT count(*) FROM t"))
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            await conn.rollback()
        after = counted()
    finally:
        await engine.dispose()
    statements, commits, rollbacks = (b - a for a, b in zip(before, after, strict=True))
    # BEGIN IMMEDIATE, the executemany once, the count; BEGIN and SELECT 1
    assert (statements, commits, rollbacks) == (5, 1, 1)
