"""Idempotency-key repository: each key with the first result it answered (kept >= 24 h)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.order.tables import idempotency_key
from shared.db import dialect_insert, insert_skipping_conflicts

# Every keyed intake claims its key: built once per dialect, the key's values as parameters.
_CLAIM = insert_skipping_conflicts(idempotency_key)


@dataclass(frozen=True)
class StoredResult:
    """What a key was first used for: the request's fingerprint and the result it got."""

    request_hash: str
    result: Any


class IdempotencyKeys:
    """`Idempotency-Key`s per merchant scope and the first result given for each."""

    RETENTION = timedelta(hours=48)

    def __init__(self, session: AsyncSession, dialect: str) -> None:
        self.session = session
        self.dialect = dialect

    async def claim(
        self, scope: str, key: str, request_hash: str, result: dict[str, Any]
    ) -> StoredResult | None:
        """Reserve the key with the result it will answer; the earlier use if there was one.

        One statement: a concurrent twin waits on the key's unique index, then finds this
        claim (and its result) instead of creating a second order.
        """
        inserted = await self.session.execute(
            _CLAIM[self.dialect],
            {
                "scope": scope,
                "key": key,
                "request_hash": request_hash,
                "response": result,
                "created_at": datetime.now(UTC),
            },
        )
        if getattr(inserted, "rowcount", 0) == 1:
            return None
        row = (
            await self.session.execute(
                select(idempotency_key.c.request_hash, idempotency_key.c.response).where(
                    idempotency_key.c.scope == scope, idempotency_key.c.key == key
                )
            )
        ).one()
        return StoredResult(row.request_hash, row.response)

    async def claim_many(
        self, claims: Sequence[tuple[str, str, str, dict[str, Any]]]
    ) -> set[tuple[str, str]]:
        """Reserve `(scope, key, request_hash, result)` claims in one statement; the
        `(scope, key)`s reserved now (a key used before is left out, untouched)."""
        if not claims:
            return set()
        now = datetime.now(UTC)
        stmt = (
            dialect_insert(self.dialect)(idempotency_key)
            .on_conflict_do_nothing()
            .returning(idempotency_key.c.scope, idempotency_key.c.key)
        )
        rows = await self.session.execute(
            stmt,
            [
                {"scope": s, "key": k, "request_hash": h, "response": r, "created_at": now}
                for s, k, h, r in claims
            ],
        )
        return {(row.scope, row.key) for row in rows}

    async def purge(self) -> int:
        """Forget keys past their retention; how many were forgotten."""
        cutoff = datetime.now(UTC) - self.RETENTION
        result = await self.session.execute(
            delete(idempotency_key).where(idempotency_key.c.created_at < cutoff)
        )
        return int(getattr(result, "rowcount", 0) or 0)
