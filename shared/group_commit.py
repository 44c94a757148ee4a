"""Group commit: the writes of concurrent requests collected for a few milliseconds and
committed in one transaction.

Each request hands its item to `GroupCommit.submit` and awaits its own answer. The first
item of a group starts a `linger` timer; when it fires (or the group is `max_group`
strong) the group goes to `write_group`, which writes it in one transaction and answers
one result per item, in order. When it answers None (having written nothing) every item
is written alone, in arrival order, with `write_one`, so each gets exactly the answer or
error it gets alone; an error `write_group` raises is every item's answer (its commit may
have happened: writing again is not always safe). A group of one goes to `write_one`,
unless `lone_as_group` (when the group's write is the cheaper one even for one item).
Every answer comes after its commit. With `linger` 0 there are no groups: each item goes
to `write_one` at once, in its own transaction (and past the cap on writers), the way it
is written without a group commit.

`writers` caps the groups written at once (None: no cap). With one writer, the items that
arrive while a group is written wait for the next group instead of queueing on the
database as groups of their own: groups grow with the load, transactions do not.

Used by the order service's intake (`services/order/intake_writer.py`) and the supplier
service's callbacks (`services/supplier/webhooks.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from prometheus_client import Counter

log = logging.getLogger(__name__)
GROUPS = Counter(
    "dropship_group_commit_groups",
    "Groups a group commit wrote (items of concurrent requests together; a lone item too).",
    ["writer"],
)
ITEMS = Counter(
    "dropship_group_commit_items",
    "Items written by a group commit, by writer (items / groups: the mean group size).",
    ["writer"],
)
ONE_BY_ONE = Counter(
    "dropship_group_commit_one_by_one",
    "Groups that could not be written together and were written one item at a time.",
    ["writer"],
)

I = TypeVar("I")  # noqa: E741  # an item
R = TypeVar("R")  # its result


class GroupCommit(Generic[I, R]):
    """The groups of one process; its loop objects are made on first use."""

    def __init__(
        self,
        write_group: Callable[[Sequence[I]], Awaitable[Sequence[R] | None]],
        write_one: Callable[[I], Awaitable[R]],
        *,
        linger_s: float,
        max_group: int,
        writers: int | None = None,
        name: str = "group",
        lone_as_group: bool = False,
    ) -> None:
        """`name` labels the metrics and the log lines (`intake`, `supplier_callbacks`)."""
        self._write_group = write_group
        self._lone_as_group = lone_as_group
        self._write_one = write_one
        self.linger_s = max(0.0, linger_s)
        self.max_group = max(1, max_group)
        self.writers = None if writers is None else max(1, writers)
        self.name = name
        self._groups, self._items = GROUPS.labels(name), ITEMS.labels(name)
        self._one_by_one = ONE_BY_ONE.labels(name)
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._due = False  # a group is due but every writer is busy: it goes when one is free
        self._writing: set[asyncio.Task[None]] = set()

    async def submit(self, item: I) -> R:
        """`item` written with its group; its result, or the error it raised."""
        if self.linger_s <= 0:  # no linger, no group: the item alone, at once
            self._groups.inc()
            self._items.inc()
            return await self._write_one(item)
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        answer.add_done_callback(_retrieved)  # a request gone: its error is not "unretrieved"
        self._waiting.append((item, answer))
        if len(self._waiting) >= self.max_group:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self.linger_s, self._flush)
        return await asyncio.shield(answer)  # a client gone does not undo a commit

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.writers is not None and len(self._writing) >= self.writers:
            self._due = True  # `_written` flushes when a writer is free; items keep joining
            return
        self._due = False
        group, self._waiting = self._waiting[: self.max_group], self._waiting[self.max_group :]
        if self._waiting:  # more than a group came in: the rest waits for its own timer
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self._flush)
        if group:
            task = asyncio.get_running_loop().create_task(self._write(group))
            self._writing.add(task)
            task.add_done_callback(self._written)

    def _written(self, task: asyncio.Task[None]) -> None:
        self._writing.discard(task)
        if self._waiting and (self._due or len(self._waiting) >= self.max_group):
            self._flush()

    async def _write(self, group: list[tuple[I, asyncio.Future[R]]]) -> None:
        self._items.inc(len(group))
        self._groups.inc()
        if len(group) > 1 or self._lone_as_group:  # else alone: `write_one`, no bookkeeping
            try:
                results = await self._write_group([item for item, _ in group])
            except Exception as exc:
                log.warning(
                    "%s group failed", self.name, extra={"items": len(group)}, exc_info=True
                )
                for _, answer in group:
                    _settle(answer, exc=exc)
                return
            if results is not None:
                for (_, answer), result in zip(group, results, strict=True):
                    _settle(answer, (result,))
                return
            log.info("%s group written one by one", self.name, extra={"items": len(group)})
            self._one_by_one.inc()
        for item, answer in group:  # one by one, in arrival order
            try:
                one = await self._write_one(item)
            except Exception as exc:
                _settle(answer, exc=exc)
            else:
                _settle(answer, (one,))

    async def drain(self) -> None:
        """Write what is waiting and wait for every group in flight (shutdown, tests)."""
        while self._waiting:
            self._flush()
            if self._writing:
                await asyncio.gather(*self._writing, return_exceptions=True)
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)


def _retrieved(answer: asyncio.Future[R]) -> None:
    if not answer.cancelled():
        answer.exception()


def _settle(
    answer: asyncio.Future[R], result: tuple[R] | None = None, *, exc: BaseException | None = None
) -> None:
    if answer.done():
        return
    if exc is not None:
        answer.set_exception(exc)
    else:
        assert result is not None
        answer.set_result(result[0])
