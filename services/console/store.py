"""Users and the audit log in the console's database (SQLAlchemy async)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.console.domain import AuditRecord, Role, User
from services.console.tables import audit_entry, console_user
from shared.db import aware


def _user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        password_hash=row.password_hash,
        role=Role(row.role),
        created_at=aware(row.created_at) or datetime.now(UTC),
        totp_secret=row.totp_secret,
        totp_enrolled=row.totp_enrolled,
        recovery_digests=list(json.loads(row.recovery_codes or "[]")),
        failed_attempts=row.failed_attempts,
        locked_until=aware(row.locked_until),
        locale=row.locale,
        session_epoch=row.session_epoch,
        totp_last_step=row.totp_last_step,
    )


def _values(user: User) -> dict[str, Any]:
    return {
        "email": user.email,
        "password_hash": user.password_hash,
        "role": user.role.value,
        "totp_secret": user.totp_secret,
        "totp_enrolled": user.totp_enrolled,
        "recovery_codes": json.dumps(user.recovery_digests),
        "failed_attempts": user.failed_attempts,
        "locked_until": user.locked_until,
        "locale": user.locale,
        "session_epoch": user.session_epoch,
        "totp_last_step": user.totp_last_step,
    }


class ConsoleStore:
    """One short transaction per call: the console's writes are single rows."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def user_by_email(self, email: str) -> User | None:
        async with self._sessions() as s:
            row = (
                await s.execute(
                    select(console_user).where(console_user.c.email == email.strip().lower())
                )
            ).first()
        return _user(row) if row else None

    async def user(self, user_id: str) -> User | None:
        async with self._sessions() as s:
            row = (
                await s.execute(select(console_user).where(console_user.c.id == user_id))
            ).first()
        return _user(row) if row else None

    async def users(self) -> list[User]:
        async with self._sessions() as s:
            rows = (await s.execute(select(console_user).order_by(console_user.c.email))).all()
        return [_user(r) for r in rows]

    async def add_user(self, user: User) -> None:
        async with self._sessions() as s, s.begin():
            await s.execute(
                insert(console_user).values(id=user.id, created_at=user.created_at, **_values(user))
            )

    async def save_user(self, user: User) -> None:
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(console_user).where(console_user.c.id == user.id).values(**_values(user))
            )

    async def audit(self, record: AuditRecord) -> None:
        async with self._sessions() as s, s.begin():
            await s.execute(
                insert(audit_entry).values(
                    at=record.at,
                    actor=record.actor,
                    role=record.role,
                    action=record.action,
                    target=record.target[:200],
                    result=record.result,
                    detail=record.detail[:4000],
                )
            )

    async def audit_log(self, query: str = "", limit: int = 200) -> list[AuditRecord]:
        stmt = select(audit_entry).order_by(audit_entry.c.id.desc()).limit(limit)
        if query.strip():
            like = f"%{query.strip().lower()}%"
            stmt = stmt.where(
                or_(
                    *(
                        func.lower(c).like(like)
                        for c in (
                            audit_entry.c.actor,
                            audit_entry.c.action,
                            audit_entry.c.target,
                            audit_entry.c.result,
                            audit_entry.c.detail,
                        )
                    )
                )
            )
        async with self._sessions() as s:
            rows = (await s.execute(stmt)).all()
        return [
            AuditRecord(
                at=aware(r.at) or datetime.now(UTC),
                actor=r.actor,
                role=r.role,
                action=r.action,
                target=r.target,
                result=r.result,
                detail=r.detail,
            )
            for r in rows
        ]


def new_user(email: str, role: Role, password_hash: str) -> User:
    return User(
        id=f"usr_{uuid.uuid4().hex[:20]}",
        email=email.strip().lower(),
        password_hash=password_hash,
        role=role,
        created_at=datetime.now(UTC),
    )
