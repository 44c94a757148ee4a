"""Moments written to SQLite without SQLAlchemy's type processing read back as SQLAlchemy
writes them (naive UTC text, `SQLITE_DATETIME`), so range queries compare them rightly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from pydantic import AwareDatetime, TypeAdapter

from shared.db import SQLITE_DATETIME, sqlite_moment


def test_a_utc_moment_is_written_as_sqlalchemy_writes_it() -> None:
    moment = datetime(2026, 12, 4, 21, 5, 7, 120, tzinfo=UTC)
    assert sqlite_moment(moment) == "2026-12-04 21:05:07.000120"
    assert sqlite_moment(moment) == moment.replace(tzinfo=None).strftime(SQLITE_DATETIME)
    whole = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert sqlite_moment(whole) == "2026-01-02 03:04:05.000000", "microseconds always shown"


def test_other_offsets_are_turned_into_utc_first() -> None:
    east = datetime(2026, 12, 5, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    assert sqlite_moment(east) == "2026-12-04 23:00:00.000000"
    parsed = TypeAdapter(AwareDatetime).validate_python("2026-12-04T21:00:00.5+00:00")
    assert sqlite_moment(parsed) == "2026-12-04 21:00:00.500000", "pydantic's own UTC"


def test_no_moment_stays_none() -> None:
    assert sqlite_moment(None) is None
