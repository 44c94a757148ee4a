"""The intake writer: storefront orders accepted within a few milliseconds, committed together.

Each `POST /v1/orders` hands its command to `IntakeWriter.place` and awaits its own
answer. The first order of a group starts a `linger` timer; when it fires (or the group
is `max_group` strong) the group is written in one transaction
(`handlers.intake_group.place_together`). A group that cannot simply be created (a key or
external id seen before or twice in it, a concurrent twin) is placed one order at a time
in arrival order with `handlers.place_order`, so each gets exactly today's answer. Every
answer comes after its commit; with `linger` 0 every order takes today's path at once.

`one_trip` (PostgreSQL) sends a lone order through `place_together` too: its writes are
one statement there (`OrderUnitOfWork.create_in_one_trip`) where `place_order` sends one
per table. A lone order that cannot simply be created is then placed by `place_order`,
as a group's are.

`writers` caps the groups a process writes at once (None: no cap). On SQLite, where every
writer queues on the database's one write lock, one writer per process lets the orders
that arrive while a group is written wait for the next group instead of queueing on the
lock as groups of their own: groups grow with the load, transactions do not. The
grouping is `shared.group_commit.GroupCommit`'s.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from services.order.domain import PlaceOrder
from services.order.handlers.commands import Idempotency, Placed, Replayed, place_order
from services.order.handlers.intake_group import Intake, place_together
from services.order.store import OrderUnitOfWork
from shared.group_commit import GroupCommit


class IntakeWriter:
    """Groups the orders of one process; built in `create_app`, its loop objects on first use."""

    def __init__(
        self,
        new_uow: Callable[[], OrderUnitOfWork],
        *,
        linger_s: float,
        max_group: int,
        writers: int | None = None,
        one_trip: bool = False,
    ) -> None:
        self._new_uow = new_uow
        self._groups: GroupCommit[Intake, Placed | Replayed] = GroupCommit(
            self._together,
            self._alone,
            linger_s=linger_s,
            max_group=max_group,
            writers=writers,
            name="intake",
            lone_as_group=one_trip,
        )
        self.linger_s = self._groups.linger_s
        self.max_group = self._groups.max_group
        self.writers = self._groups.writers

    async def place(self, cmd: PlaceOrder, idempotency: Idempotency | None) -> Placed | Replayed:
        """Place one storefront order (`handlers.place_order`'s answers and errors)."""
        return await self._groups.submit(Intake(cmd, idempotency))

    async def _together(self, group: Sequence[Intake]) -> list[Placed] | None:
        return await place_together(group, self._new_uow())

    async def _alone(self, intake: Intake) -> Placed | Replayed:
        task: asyncio.Task[Placed | Replayed] = intake.context.run(
            _place_one, intake, self._new_uow()
        )
        return await task

    async def drain(self) -> None:
        """Write what is waiting and wait for every group in flight (shutdown, tests)."""
        await self._groups.drain()


def _place_one(intake: Intake, uow: OrderUnitOfWork) -> asyncio.Task[Placed | Replayed]:
    """The order placed alone, as a task started in the request's context (its trace)."""
    return asyncio.get_running_loop().create_task(
        place_order(intake.cmd, uow, idempotency=intake.idempotency)
    )
