"""A bounded in-memory cache: least recently used entries go first, each expires after a TTL.

Every process-local cache keyed by something a caller chooses (a supplier id in a webhook
URL, a reporting window in a query string) must be bounded, or a stream of made-up keys
grows it until the process dies. `cachetools.TTLCache` would do; this is the few lines we
need without another dependency.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedTtlCache(Generic[K, V]):
    """At most `max_entries` entries, each kept `ttl_s` seconds (0: nothing is kept)."""

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> tuple[bool, V | None]:
        """`(True, value)` for a live entry (now the most recently used), else `(False, None)`."""
        hit = self._entries.get(key)
        if hit is None:
            return False, None
        if hit[0] <= self._clock():
            del self._entries[key]
            return False, None
        self._entries.move_to_end(key)
        return True, hit[1]

    def put(self, key: K, value: V) -> None:
        if self.ttl_s <= 0:
            return
        now = self._clock()
        self._entries[key] = (now + self.ttl_s, value)
        self._entries.move_to_end(key)
        while self._entries:  # expired entries first (oldest first), then the least used
            oldest_key, (expires, _) = next(iter(self._entries.items()))
            if expires > now and len(self._entries) <= self.max_entries:
                break
            del self._entries[oldest_key]

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()
