"""Sends claimed by the transaction that queued them, handed to this process's sender.

A unit of work that queues a notice due now claims it in the same transaction (as the
sender's claim would: `sending`, attempt 1, under a lease), so no other replica's claim
takes it, and after the commit hands it here; the sender takes it from memory instead
of claiming it with a transaction of its own. The table stays the truth: a process that
dies between the commit and the send leaves the lease to expire, and a sender's poll
claims the row again, as it does for a send cut short.

Claims at queueing time are bounded by the sender's free slots (`room`), so a busy
sender leaves new notices pending for any replica's claim. A handed send that waited
half its lease without a free slot is dropped from memory: its row is claimed again
when the lease expires, so it is never sent by two holders of one lease.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from datetime import timedelta

from services.notify.domain import Notification


class HandOff:
    """The in-memory queue between queueing commits and the sender of one process."""

    def __init__(
        self,
        wake: Callable[[], None],
        lease: timedelta,
        capacity: int,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._wake = wake
        self.lease = lease
        self.capacity = capacity
        self.enabled = enabled
        self._clock = clock
        self._queue: deque[tuple[Notification, float]] = deque()
        self.running: Callable[[], int] = lambda: 0
        """Sends under way in the sender (it sets this)."""
        self.handed = 0
        self.expired = 0

    def room(self) -> int:
        """How many more due notices a queueing transaction may claim for this sender."""
        if not self.enabled:
            return 0
        return max(0, self.capacity - self.running() - len(self._queue))

    def give(self, claimed: Sequence[Notification]) -> None:
        """After the commit: these rows are claimed for this process; wake the sender."""
        take_by = self._clock() + self.lease.total_seconds() / 2
        self._queue.extend((send, take_by) for send in claimed)
        self.handed += len(claimed)
        self._wake()

    def take(self, limit: int) -> list[Notification]:
        """Up to `limit` handed sends, oldest first; ones held too long are left to lease expiry."""
        now = self._clock()
        taken: list[Notification] = []
        while self._queue and len(taken) < limit:
            send, take_by = self._queue.popleft()
            if take_by < now:
                self.expired += 1
                continue
            taken.append(send)
        return taken

    def __len__(self) -> int:
        return len(self._queue)
