"""Circuit breaker transitions on a failure rate, driven by a fake clock."""

from __future__ import annotations

import pytest

from services.supplier.breaker import BreakerState, CircuitBreaker

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def changes() -> list[tuple[str, BreakerState, BreakerState]]:
    return []


@pytest.fixture
def breaker(
    clock: FakeClock, changes: list[tuple[str, BreakerState, BreakerState]]
) -> CircuitBreaker:
    return CircuitBreaker(
        window=10,
        min_calls=4,
        failure_rate=0.5,
        cooldown_s=30.0,
        clock=clock,
        on_change=lambda key, old, new: changes.append((key, old, new)),
    )


def feed(breaker: CircuitBreaker, key: str, outcomes: str) -> None:
    """'s' = success, 'f' = failure."""
    for o in outcomes:
        breaker.record(key, success=o == "s")


def trip(breaker: CircuitBreaker, key: str = "sup_a") -> None:
    feed(breaker, key, "ffff")
    assert breaker.state(key) is OPEN


def test_new_key_is_closed_and_allows(breaker: CircuitBreaker) -> None:
    assert breaker.state("sup_a") is CLOSED
    assert breaker.allow("sup_a")


def test_stays_closed_below_min_calls_even_if_all_fail(breaker: CircuitBreaker) -> None:
    feed(breaker, "sup_a", "fff")
    assert breaker.state("sup_a") is CLOSED
    assert breaker.allow("sup_a")


def test_stays_closed_below_failure_rate(breaker: CircuitBreaker) -> None:
    feed(breaker, "sup_a", "sssssfff")  # 3/8 < 0.5
    assert breaker.state("sup_a") is CLOSED


def test_opens_when_rate_reached_not_only_on_consecutive_failures(
    breaker: CircuitBreaker, changes: list[tuple[str, BreakerState, BreakerState]]
) -> None:
    feed(breaker, "sup_a", "sfsfsf")  # never two failures in a row
    assert breaker.state("sup_a") is OPEN
    assert not breaker.allow("sup_a")
    assert changes == [("sup_a", CLOSED, OPEN)]


def test_window_is_rolling_old_outcomes_drop_out(breaker: CircuitBreaker) -> None:
    feed(breaker, "sup_a", "ssssfff" + "s" * 10)  # 3/7 never tripped it; then they fall out
    assert breaker.snapshot()["sup_a"].failures == 0
    feed(breaker, "sup_a", "ffff")  # 4/10 < 0.5
    assert breaker.state("sup_a") is CLOSED
    feed(breaker, "sup_a", "f")  # 5/10
    assert breaker.state("sup_a") is OPEN


def test_open_refuses_until_cooldown_then_half_opens(
    breaker: CircuitBreaker,
    clock: FakeClock,
    changes: list[tuple[str, BreakerState, BreakerState]],
) -> None:
    trip(breaker)
    clock.advance(29.9)
    assert not breaker.allow("sup_a")
    assert breaker.state("sup_a") is OPEN
    clock.advance(0.1)
    assert breaker.state("sup_a") is HALF_OPEN
    assert changes[-1] == ("sup_a", OPEN, HALF_OPEN)


def test_half_open_lets_one_probe_through(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30)
    assert breaker.allow("sup_a")
    assert not breaker.allow("sup_a")  # the probe is in flight


def test_probe_success_closes_and_resets_window(
    breaker: CircuitBreaker,
    clock: FakeClock,
    changes: list[tuple[str, BreakerState, BreakerState]],
) -> None:
    trip(breaker)
    clock.advance(30)
    assert breaker.allow("sup_a")
    breaker.record_success("sup_a")
    assert breaker.state("sup_a") is CLOSED
    assert changes == [
        ("sup_a", CLOSED, OPEN),
        ("sup_a", OPEN, HALF_OPEN),
        ("sup_a", HALF_OPEN, CLOSED),
    ]
    snap = breaker.snapshot()["sup_a"]
    assert (snap.calls, snap.failures) == (0, 0)
    feed(breaker, "sup_a", "fff")  # the old failures are gone: 3 < min_calls
    assert breaker.state("sup_a") is CLOSED


def test_probe_failure_reopens_for_another_cooldown(
    breaker: CircuitBreaker,
    clock: FakeClock,
    changes: list[tuple[str, BreakerState, BreakerState]],
) -> None:
    trip(breaker)
    clock.advance(30)
    assert breaker.allow("sup_a")
    breaker.record_failure("sup_a")
    assert breaker.state("sup_a") is OPEN
    assert changes[-1] == ("sup_a", HALF_OPEN, OPEN)
    clock.advance(29)
    assert not breaker.allow("sup_a")
    clock.advance(1)
    assert breaker.allow("sup_a")


def test_lost_probe_is_forgotten_after_cooldown(breaker: CircuitBreaker, clock: FakeClock) -> None:
    trip(breaker)
    clock.advance(30)
    assert breaker.allow("sup_a")  # this probe never reports (caller cancelled)
    clock.advance(10)
    assert not breaker.allow("sup_a")
    clock.advance(20)
    assert breaker.allow("sup_a")


def test_half_open_calls_allows_several_probes(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=4, min_calls=4, cooldown_s=5, half_open_calls=2, clock=clock)
    feed(breaker, "k", "ffff")
    clock.advance(5)
    assert [breaker.allow("k") for _ in range(3)] == [True, True, False]


def test_outcomes_reported_while_open_are_ignored(
    breaker: CircuitBreaker, clock: FakeClock
) -> None:
    trip(breaker)
    feed(breaker, "sup_a", "ssss")  # late answers of calls let through before it opened
    assert breaker.state("sup_a") is OPEN
    clock.advance(30)
    assert breaker.state("sup_a") is HALF_OPEN


def test_keys_are_independent(breaker: CircuitBreaker) -> None:
    trip(breaker, "sup_a")
    assert breaker.allow("sup_b")
    assert breaker.state("sup_b") is CLOSED


def test_snapshot_reports_every_key(breaker: CircuitBreaker, clock: FakeClock) -> None:
    feed(breaker, "sup_b", "sssf")
    trip(breaker, "sup_a")
    clock.advance(10)
    snap = breaker.snapshot()
    assert snap["sup_b"].state is CLOSED
    assert (snap["sup_b"].calls, snap["sup_b"].failures) == (4, 1)
    assert snap["sup_b"].failure_rate == pytest.approx(0.25)
    assert snap["sup_a"].state is OPEN
    assert snap["sup_a"].times_opened == 1
    assert snap["sup_a"].open_remaining_s == pytest.approx(20)


def test_a_failing_hook_does_not_break_the_breaker(clock: FakeClock) -> None:
    def hook(key: str, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("alerting is down")

    breaker = CircuitBreaker(window=4, min_calls=4, clock=clock, on_change=hook)
    feed(breaker, "k", "ffff")
    assert breaker.state("k") is OPEN


def test_zero_cooldown_half_opens_immediately(clock: FakeClock) -> None:
    breaker = CircuitBreaker(window=4, min_calls=4, cooldown_s=0, clock=clock)
    feed(breaker, "k", "ffff")
    assert breaker.state("k") is HALF_OPEN


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": 0},
        {"window": 5, "min_calls": 6},
        {"min_calls": 0},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"cooldown_s": -1},
        {"half_open_calls": 0},
    ],
)
def test_rejects_nonsense_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(**kwargs)  # type: ignore[arg-type]
