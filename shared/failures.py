"""Failures of a delivery: an infrastructure outage told from a bad message; dead-letter headers."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy.exc

_INFRA_SQLSTATES = {"57P01", "57P02", "57P03", "53300", "53400"}
"""admin/crash shutdown, cannot connect now, too many connections, configuration limit;
and every state of class 08 (connection exception)."""
_INFRA_TYPES: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,
    OSError,  # ConnectionRefusedError, ConnectionResetError, TimeoutError, ...
)


def is_infrastructure_failure(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) says the database or network is unavailable,
    rather than that this message cannot be handled."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _INFRA_TYPES):
            return True
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and (code in _INFRA_SQLSTATES or code.startswith("08")):
            return True
        if (
            type(current).__module__.startswith("asyncpg")
            and "Connection" in type(current).__name__
        ):
            return True
        orig = getattr(current, "orig", None)
        current = (
            orig if isinstance(orig, BaseException) else (current.__cause__ or current.__context__)
        )
    return False


DLQ_HEADER_PREFIX = "dlq."


def dead_letter_headers(
    exc: BaseException, attempts: int, topic: str, partition: int, offset: int, group: str
) -> list[tuple[str, bytes]]:
    fields = {
        "error_type": type(exc).__name__,
        "error_message": str(exc)[:2000],
        "attempts": str(attempts),
        "original_topic": topic,
        "original_partition": str(partition),
        "original_offset": str(offset),
        "consumer_group": group,
        "failed_at": datetime.now(UTC).isoformat(),
    }
    return [(DLQ_HEADER_PREFIX + k, v.encode()) for k, v in fields.items()]
