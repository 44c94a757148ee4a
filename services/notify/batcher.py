"""A batcher: writes that arrive within a short linger go to the database together."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    """Collects items for up to `linger` seconds (or until `max_size` wait) and hands them
    to `write` in one call, typically one transaction; each `submit` returns its own
    item's result, or raises what the write raised.

    Nothing is written before `write` returns: a process that dies first has written none
    of the batch, so callers must only submit what is safe to lose that way (notify's
    sender submits outcomes of sends; an outcome not written leaves its lease to expire).
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
        linger: float,
        max_size: int = 100,
    ) -> None:
        self._write = write
        self._linger = linger
        self._max_size = max_size
        self._items: list[tuple[T, asyncio.Future[R]]] = []
        self._full = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0
        """Writes made so far (for tests and benches)."""

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._items.append((item, future))
        if len(self._items) >= self._max_size:
            self._full.set()
        if self._flusher is None:
            self._start()
        # the write goes on even if this caller is cancelled: others share the batch
        return await asyncio.shield(future)

    def _start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_after_linger())
        self._tasks.add(self._flusher)
        self._flusher.add_done_callback(self._tasks.discard)

    async def _flush_after_linger(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._linger):
                await self._full.wait()
        # items submitted from here on start the next batch (and its linger)
        batch, self._items = self._items[: self._max_size], self._items[self._max_size :]
        self._full.clear()
        self._flusher = None
        if self._items:
            self._start()
        await self._flush(batch)

    async def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        self.batches += 1
        try:
            results = await self._write([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled mid-write: the submitters are told so
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def close(self) -> None:
        """Stop: a batch not yet written is dropped (its submitters get CancelledError)."""
        self._flusher = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, future in self._items:
            future.cancel()
        self._items = []
