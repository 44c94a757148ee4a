"""The console's own tables: users and the audit log (never another service's data)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from shared.db import NAMING, Id

metadata = MetaData(naming_convention=NAMING)

console_user = Table(
    "console_user",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    Column("role", String(16), nullable=False),
    Column("totp_secret", String(64), nullable=True),
    Column("totp_enrolled", Boolean, nullable=False, default=False),
    Column("recovery_codes", Text, nullable=False, default="[]"),
    Column("failed_attempts", Integer, nullable=False, default=0),
    Column("locked_until", DateTime(timezone=True), nullable=True),
    Column("locale", String(8), nullable=False, default="en"),
    Column("session_epoch", Integer, nullable=False, default=0),
    Column("totp_last_step", BigInteger, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

audit_entry = Table(
    "audit_entry",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(254), nullable=False),
    Column("role", String(16), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(200), nullable=False),
    Column("result", String(16), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_audit_entry_at", "at"),
)
