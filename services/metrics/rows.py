"""Fact-row plumbing shared by the handlers: rows by table, exact micro-units, UTC times."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Table

from shared.consumer import PermanentError

MICROS = 6
_MAX_MICROS = 2**63 - 1

Rows = dict[Table, list[dict[str, Any]]]


def micros(amount: Decimal, field: str) -> int:
    """An amount as integer micro-units; refuses what cannot be stored exactly."""
    scaled = amount.scaleb(MICROS)
    if scaled != scaled.to_integral_value():
        raise PermanentError(f"{field}={amount:f} has more than {MICROS} decimals")
    value = int(scaled)
    if abs(value) > _MAX_MICROS:
        raise PermanentError(f"{field}={amount:f} is out of range")
    return value


def utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)
