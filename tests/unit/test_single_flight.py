"""Callers missing a cache together share one load (supplier callbacks' signing secrets)."""

from __future__ import annotations

import asyncio

import pytest

from shared.single_flight import SingleFlight
from shared.testing import eventually


class Loader:
    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self) -> str:
        self.calls += 1
        call = self.calls
        await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        return f"secret-{call}"


async def _true(value: bool) -> bool:
    return value


async def test_callers_missing_together_share_one_load():
    flights: SingleFlight[str, str] = SingleFlight()
    loader = Loader()
    waiting = [asyncio.create_task(flights.load("sup_a", loader)) for _ in range(20)]
    other = asyncio.create_task(flights.load("sup_b", loader))
    await eventually(lambda: _true(loader.calls == 2), timeout=5, what="loads started")
    loader.gate.set()
    assert await asyncio.gather(*waiting) == ["secret-1"] * 20
    assert await other == "secret-2", "another key loads on its own"
    assert len(flights) == 0, "nothing is held once a load lands"
    assert await flights.load("sup_a", loader) == "secret-3", "a later miss loads again"


async def test_a_failed_load_fails_every_caller_and_the_next_miss_tries_again():
    flights: SingleFlight[str, str] = SingleFlight()
    loader = Loader()
    loader.fail = LookupError("no connection free")
    waiting = [asyncio.create_task(flights.load("sup_a", loader)) for _ in range(3)]
    await eventually(lambda: _true(loader.calls == 1), timeout=5, what="load started")
    loader.gate.set()
    for task in waiting:
        with pytest.raises(LookupError, match="no connection free"):
            await task
    loader.fail = None
    assert await flights.load("sup_a", loader) == "secret-2"
    assert loader.calls == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_others_load():
    flights: SingleFlight[str, str] = SingleFlight()
    loader = Loader()
    leaving = asyncio.create_task(flights.load("sup_a", loader))
    staying = asyncio.create_task(flights.load("sup_a", loader))
    await eventually(lambda: _true(loader.calls == 1), timeout=5, what="load started")
    leaving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaving
    loader.gate.set()
    assert await staying == "secret-1"
    assert loader.calls == 1
