"""Per-key circuit breaker that opens on a failure rate over a rolling window of calls.

Why not a library: the maintained asyncio-capable breakers (pybreaker / aiobreaker's
``fail_max``, purgatory's ``threshold``, circuitbreaker's ``failure_threshold``) open
after N *consecutive* failures, so a supplier that fails every other call never trips
them. We want "half of the last 20 calls failed", which is ~100 lines of plain code.

States per key (a supplier id):

* ``closed``: every outcome goes into a window of the last ``window`` calls; once it
  holds at least ``min_calls`` outcomes and the failure share reaches
  ``failure_rate``, the key opens.
* ``open``: ``allow()`` is False until ``cooldown_s`` has passed, then the key turns
  half-open.
* ``half_open``: ``allow()`` lets ``half_open_calls`` probes through (and refuses the
  rest); a probe success closes the key with an empty window, a probe failure opens
  it again for another ``cooldown_s``. A probe that never reports (its caller was
  cancelled) is forgotten after ``cooldown_s`` so the key cannot stay stuck.

Outcomes reported while a key is open (calls let through before it opened) are
ignored. Everything is synchronous and never awaits, so it is safe to share within one
event loop; it is not thread-safe. ``on_change(key, old, new)`` is called on every
transition (the service logs, alerts and counts there); an exception in it is logged
and swallowed so a broken hook never breaks supplier calls.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

__all__ = ["BreakerSnapshot", "BreakerState", "CircuitBreaker", "OnChange"]

logger = logging.getLogger(__name__)


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


OnChange = Callable[[str, BreakerState, BreakerState], None]


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """One key's state for /metrics: the window's counts and how often it opened."""

    state: BreakerState
    calls: int
    failures: int
    failure_rate: float
    times_opened: int
    open_remaining_s: float


@dataclass(slots=True)
class _Circuit:
    window: deque[bool]  # True = failure
    state: BreakerState = BreakerState.CLOSED
    opened_at: float = 0.0
    probes: list[float] = field(default_factory=list)  # start times of in-flight probes
    times_opened: int = 0


class CircuitBreaker:
    """Failure-rate circuit breaker keyed by an arbitrary string (the supplier id)."""

    def __init__(
        self,
        *,
        window: int = 20,
        min_calls: int = 5,
        failure_rate: float = 0.5,
        cooldown_s: float = 30.0,
        half_open_calls: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_change: OnChange | None = None,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if not 1 <= min_calls <= window:
            raise ValueError("min_calls must be between 1 and window")
        if not 0.0 < failure_rate <= 1.0:
            raise ValueError("failure_rate must be in (0, 1]")
        if cooldown_s < 0:
            raise ValueError("cooldown_s must not be negative")
        if half_open_calls < 1:
            raise ValueError("half_open_calls must be at least 1")
        self.window = window
        self.min_calls = min_calls
        self.failure_rate = failure_rate
        self.cooldown_s = cooldown_s
        self.half_open_calls = half_open_calls
        self.on_change = on_change
        self._clock = clock
        self._circuits: dict[str, _Circuit] = {}

    def allow(self, key: str) -> bool:
        """May a call to `key` go out now? In half-open this takes one probe slot."""
        circuit = self._refresh(key)
        if circuit.state is BreakerState.CLOSED:
            return True
        if circuit.state is BreakerState.OPEN:
            return False
        now = self._clock()
        circuit.probes = [t for t in circuit.probes if now - t < self.cooldown_s]
        if len(circuit.probes) >= self.half_open_calls:
            return False
        circuit.probes.append(now)
        return True

    def record(self, key: str, *, success: bool) -> None:
        """Report the outcome of one call to `key`."""
        circuit = self._refresh(key)
        if circuit.state is BreakerState.OPEN:
            return
        if circuit.state is BreakerState.HALF_OPEN:
            if success:
                circuit.window.clear()
                circuit.probes.clear()
                self._move(key, circuit, BreakerState.CLOSED)
            else:
                self._open(key, circuit)
            return
        circuit.window.append(not success)
        calls = len(circuit.window)
        if calls >= self.min_calls and sum(circuit.window) / calls >= self.failure_rate:
            self._open(key, circuit)

    def record_success(self, key: str) -> None:
        self.record(key, success=True)

    def record_failure(self, key: str) -> None:
        self.record(key, success=False)

    def state(self, key: str) -> BreakerState:
        """The key's current state (an open key past its cooldown reads half-open)."""
        return self._refresh(key).state

    def snapshot(self) -> dict[str, BreakerSnapshot]:
        """Every key seen so far, for /metrics and the ops view."""
        now = self._clock()
        out: dict[str, BreakerSnapshot] = {}
        for key in list(self._circuits):
            circuit = self._refresh(key)
            calls = len(circuit.window)
            failures = sum(circuit.window)
            remaining = 0.0
            if circuit.state is BreakerState.OPEN:
                remaining = max(0.0, circuit.opened_at + self.cooldown_s - now)
            out[key] = BreakerSnapshot(
                state=circuit.state,
                calls=calls,
                failures=failures,
                failure_rate=failures / calls if calls else 0.0,
                times_opened=circuit.times_opened,
                open_remaining_s=remaining,
            )
        return out

    def _refresh(self, key: str) -> _Circuit:
        circuit = self._circuits.get(key)
        if circuit is None:
            circuit = self._circuits[key] = _Circuit(window=deque(maxlen=self.window))
        if (
            circuit.state is BreakerState.OPEN
            and self._clock() - circuit.opened_at >= self.cooldown_s
        ):
            circuit.probes.clear()
            self._move(key, circuit, BreakerState.HALF_OPEN)
        return circuit

    def _open(self, key: str, circuit: _Circuit) -> None:
        circuit.opened_at = self._clock()
        circuit.probes.clear()
        circuit.times_opened += 1
        self._move(key, circuit, BreakerState.OPEN)

    def _move(self, key: str, circuit: _Circuit, new: BreakerState) -> None:
        old, circuit.state = circuit.state, new
        if old is new or self.on_change is None:
            return
        try:
            self.on_change(key, old, new)
        except Exception:
            logger.exception("circuit breaker on_change hook failed", extra={"key": key})
