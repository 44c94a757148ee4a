"""The intake writer: storefront orders accepted within a few milliseconds, committed together.

Each `POST /v1/orders` hands its command to `IntakeWriter.place` and awaits its own
answer. The first order of a group starts a `linger` timer; when it fires (or the group
is `max_group` strong) the group is written in one transaction
(`handlers.intake_group.place_together`). A group that cannot simply be created (a key or
external id seen before or twice in it, a concurrent twin) is placed one order at a time
in arrival order with `handlers.place_order`, so each gets exactly today's answer. Every
answer comes after its commit; with `linger` 0 every order takes today's path at once.

`writers` caps the groups a process writes at once (None: no cap). On SQLite, where every
writer queues on the database's one write lock, one writer per process lets the orders
that arrive while a group is written wait for the next group instead of queueing on the
lock as groups of their own: groups grow with the load, transactions do not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from services.order.domain import PlaceOrder
from services.order.handlers.commands import Idempotency, Placed, Replayed, place_order
from services.order.handlers.intake_group import Intake, place_together
from services.order.store import OrderUnitOfWork

log = logging.getLogger(__name__)

Answer = asyncio.Future[Placed | Replayed]


class IntakeWriter:
    """Groups the orders of one process; built in `create_app`, its loop objects on first use."""

    def __init__(
        self,
        new_uow: Callable[[], OrderUnitOfWork],
        *,
        linger_s: float,
        max_group: int,
        writers: int | None = None,
    ) -> None:
        self._new_uow = new_uow
        self.linger_s = linger_s
        self.max_group = max(1, max_group)
        self.writers = None if writers is None else max(1, writers)
        self._waiting: list[tuple[Intake, Answer]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._due = False  # a group is due but every writer is busy: it goes when one is free
        self._writing: set[asyncio.Task[None]] = set()

    async def place(self, cmd: PlaceOrder, idempotency: Idempotency | None) -> Placed | Replayed:
        """Place one storefront order (`handlers.place_order`'s answers and errors)."""
        if self.linger_s <= 0:
            return await place_order(cmd, self._new_uow(), idempotency=idempotency)
        loop = asyncio.get_running_loop()
        answer: Answer = loop.create_future()
        answer.add_done_callback(_retrieved)  # a request gone: its error is not "unretrieved"
        self._waiting.append((Intake(cmd, idempotency), answer))
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
            self._due = True  # `_written` flushes when a writer is free; orders keep joining
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

    async def _write(self, group: list[tuple[Intake, Answer]]) -> None:
        if len(group) > 1:  # alone: today's path, no group bookkeeping
            try:
                placed = await place_together([i for i, _ in group], self._new_uow())
            except Exception as exc:
                log.warning("intake group failed", extra={"orders": len(group)}, exc_info=True)
                for _, answer in group:
                    _settle(answer, exc=exc)
                return
            if placed is not None:
                for (_, answer), result in zip(group, placed, strict=True):
                    _settle(answer, result)
                return
            log.info("intake group placed one by one", extra={"orders": len(group)})
        for intake, answer in group:  # one by one, in arrival order
            try:
                task = intake.context.run(_place_one, intake, self._new_uow())
                one: Placed | Replayed = await task
            except Exception as exc:
                _settle(answer, exc=exc)
            else:
                _settle(answer, one)

    async def drain(self) -> None:
        """Write what is waiting and wait for every group in flight (shutdown, tests)."""
        while self._waiting:
            self._flush()
            if self._writing:
                await asyncio.gather(*self._writing, return_exceptions=True)
        while self._writing:
            await asyncio.gather(*self._writing, return_exceptions=True)


def _place_one(intake: Intake, uow: OrderUnitOfWork) -> asyncio.Task[Placed | Replayed]:
    """The order placed alone, as a task started in the request's context (its trace)."""
    return asyncio.get_running_loop().create_task(
        place_order(intake.cmd, uow, idempotency=intake.idempotency)
    )


def _retrieved(answer: Answer) -> None:
    if not answer.cancelled():
        answer.exception()


def _settle(
    answer: Answer, result: Placed | Replayed | None = None, *, exc: BaseException | None = None
) -> None:
    if answer.done():
        return
    if exc is not None:
        answer.set_exception(exc)
    else:
        assert result is not None
        answer.set_result(result)
