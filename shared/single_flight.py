"""One load per key at a time: callers that miss a cache together share one load."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    """Concurrent `load`s of one key await the first one's result (or its exception).

    Under a burst, a cache entry expiring makes every request in flight miss it at once;
    each loading it would take a database connection of its own. A caller that goes away
    (cancelled) does not cancel the load the others wait for. Once a load is done the next
    call loads again: this holds nothing, the cache does.
    """

    def __init__(self) -> None:
        self._loads: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._loads)

    async def load(self, key: K, loader: Callable[[], Awaitable[V]]) -> V:
        flight = self._loads.get(key)
        if flight is None:
            flight = asyncio.ensure_future(loader())
            self._loads[key] = flight
            flight.add_done_callback(functools.partial(self._landed, key))
        return await asyncio.shield(flight)

    def _landed(self, key: K, flight: asyncio.Future[V]) -> None:
        if self._loads.get(key) is flight:
            del self._loads[key]
        if not flight.cancelled():
            flight.exception()  # retrieved: a load whose callers all left logs no warning
