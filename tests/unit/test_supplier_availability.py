"""Breaker moves become supplier-status-changed events, written through the outbox once each."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from services.supplier.availability import BREAKER_OPEN, AvailabilityReporter
from services.supplier.breaker import BreakerState, CircuitBreaker
from services.supplier.domain import status_change
from shared.events import SupplierAvailability, SupplierStatusChanged
from shared.testing import eventually
from tests.unit.supplier_fakes import FakeUnitOfWork

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("closed", "open", SupplierAvailability.UNAVAILABLE),
        ("open", "half_open", None),
        ("half_open", "open", None),
        ("half_open", "closed", SupplierAvailability.AVAILABLE),
    ],
)
def test_which_breaker_moves_change_availability(
    old: str, new: str, expected: SupplierAvailability | None
) -> None:
    change = status_change("sup_a", old, new, T0)
    assert (change.status if change else None) == expected
    if change is not None:
        assert change.subject == "sup_a" and change.changed_at == T0
        assert change.reason == ("breaker_open" if new == "open" else "breaker_closed")


async def test_an_opening_and_closing_breaker_writes_one_event_each_through_the_outbox() -> None:
    now = [0.0]
    reporter = AvailabilityReporter(clock=lambda: T0)
    breaker = CircuitBreaker(
        window=4, min_calls=2, cooldown_s=10, clock=lambda: now[0], on_change=reporter
    )
    uows: list[FakeUnitOfWork] = []

    def new_uow() -> FakeUnitOfWork:
        uows.append(FakeUnitOfWork())
        return uows[-1]

    writer = asyncio.create_task(reporter.run(new_uow))  # type: ignore[arg-type]
    try:
        for _ in range(3):  # opens after two failures; the third is refused
            if breaker.allow("sup_a"):
                breaker.record("sup_a", success=False)
        assert BREAKER_OPEN.labels("sup_a")._value.get() == 1
        now[0] = 11.0
        assert breaker.allow("sup_a")  # half-open probe: no event
        breaker.record("sup_a", success=False)  # fails: open again, still no event
        now[0] = 22.0
        assert breaker.allow("sup_a")
        breaker.record("sup_a", success=True)  # closed: available
        assert BREAKER_OPEN.labels("sup_a")._value.get() == 0

        async def both_written() -> bool:
            return len(uows) == 2 and all(u.commits for u in uows)

        await eventually(both_written, timeout=5, interval=0.01, what="two status changes")
    finally:
        writer.cancel()
    committed = [e for u in uows for e in u.committed]
    assert all(isinstance(e, SupplierStatusChanged) for e in committed)
    assert [(e.supplier_id, e.status, e.reason) for e in committed] == [
        ("sup_a", SupplierAvailability.UNAVAILABLE, "breaker_open"),
        ("sup_a", SupplierAvailability.AVAILABLE, "breaker_closed"),
    ]
    assert all(u.commits == 1 for u in uows)


async def test_a_failed_write_is_retried_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("services.supplier.availability.RETRY_S", 0)
    reporter = AvailabilityReporter(clock=lambda: T0)
    reporter("sup_b", BreakerState.CLOSED, BreakerState.OPEN)
    attempts: list[FakeUnitOfWork] = []

    class Down(FakeUnitOfWork):
        async def commit(self) -> None:
            raise ConnectionError("database away")

    def new_uow() -> FakeUnitOfWork:
        attempts.append(Down() if len(attempts) < 2 else FakeUnitOfWork())
        return attempts[-1]

    writer = asyncio.create_task(reporter.run(new_uow))  # type: ignore[arg-type]
    try:

        async def written() -> bool:
            return len(attempts) == 3 and attempts[-1].commits == 1

        await eventually(written, timeout=5, interval=0.01, what="the retried write")
    finally:
        writer.cancel()
    [event] = attempts[-1].committed
    assert isinstance(event, SupplierStatusChanged) and event.supplier_id == "sup_b"
