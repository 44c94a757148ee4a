"""Time in a benchmark: the open-model timetable, waiting for a condition, stopping tasks."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

perf = time.perf_counter


async def paced(count: int, rate: float, lead_s: float = 0.02) -> AsyncIterator[tuple[int, float]]:
    """Open model: yield (i, scheduled perf_counter time) at start + i/rate, whatever the
    system under test did meanwhile (late sends are measured from their schedule)."""
    start = perf() + lead_s
    for i in range(count):
        due = start + i / rate
        wait = due - perf()
        if wait > 0:
            await asyncio.sleep(wait)
        yield i, due


async def wait_until(
    predicate: Callable[[], bool], deadline: float, interval: float = 0.02
) -> bool:
    """Poll `predicate` until it holds (True) or perf_counter passes `deadline` (False)."""
    while not predicate():
        if perf() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


async def stop_tasks(*tasks: asyncio.Task[Any]) -> None:
    """Cancel the tasks and wait for them, whatever they raise."""
    for t in tasks:
        t.cancel()
    for t in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await t
