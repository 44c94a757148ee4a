"""The write-back worker: drains the queue, calls the shop, records the outcome on the order.

Each due task is leased (compare-and-set on `next_at`, so replicas never share one), sent
outside any transaction, then finished, rescheduled or given up in a second transaction
that also writes the order's timeline entry (`marketplace-synced`, or, when it keeps
failing, the event `marketplace-sync-failed` through the outbox: notify pages ops). The wait
before a retry is the platform's own (Shopify's cost throttle, `Retry-After`) when it
gives one, otherwise exponential backoff with jitter.
"""

from __future__ import annotations

import logging
import random
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from services.order.shops.clients import Rejected, RetryLater, WritebackError, client_for
from services.order.shops.domain import Shop, WritebackTask
from services.order.shops.handlers import queue, shops
from services.order.store import OrderUnitOfWork
from shared.egress import guarded_client
from shared.events import Envelope, MarketplaceOperation, MarketplaceSyncFailed
from shared.idle import Alarm
from shared.logging import log_context

log = logging.getLogger(__name__)


class WritebackWorker:
    def __init__(
        self,
        uow: Callable[[], OrderUnitOfWork],
        http: httpx.AsyncClient,
        *,
        max_attempts: int = 8,
        backoff_s: float = 2.0,
        backoff_max_s: float = 300.0,
        lease_s: float = 60.0,
        batch: int = 20,
        refund_money: bool = False,
    ) -> None:
        self.uow = uow
        self.http = http
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.lease = timedelta(seconds=lease_s)
        self.batch = batch
        self.refund_money = refund_money

    async def run(self, alarm: Alarm) -> None:
        """Send what is due; when nothing was, sleep until the next task is due or one is
        queued in this process (`OrderUnitOfWork.writeback_queued` wakes `alarm`)."""
        while True:
            if await self.run_once() == 0:
                async with self.uow() as uow:
                    due = await queue(uow).next_due()
                await alarm.sleep(due)

    async def run_once(self) -> int:
        """Send every due write-back once; the number attempted."""
        async with self.uow() as uow:
            due = await queue(uow).due(self.batch)
        attempted = 0
        for task_id in due:
            async with self.uow() as uow:
                task = await queue(uow).claim(task_id, self.lease)
                shop = await shops(uow).get(task.shop_id) if task else None
                await uow.commit()
            if task is None:
                continue  # another replica has it
            attempted += 1
            with log_context(order_id=task.order_id):
                await self._attempt(task, shop)
        return attempted

    async def _attempt(self, task: WritebackTask, shop: Shop | None) -> None:
        context = {"writeback": task.key, "attempt": task.attempts}
        try:
            if shop is None or not shop.active:
                raise Rejected("the shop is no longer registered or is disabled")
            client = client_for(self.http, shop, refund_money=self.refund_money)
            send = {"fulfil": client.fulfil, "cancel": client.cancel, "refund": client.refund}
            outcome = await send[task.kind](task)
        except RetryLater as exc:
            if task.attempts < self.max_attempts:
                wait = max(exc.wait_s or 0.0, self._backoff(task.attempts))
                log.warning(
                    "write-back will be retried",
                    extra={**context, "reason": str(exc), "wait_s": wait},
                )
                async with self.uow() as uow:
                    at = datetime.now(UTC) + timedelta(seconds=wait)
                    await queue(uow).retry_at(task.id, at, str(exc))
                    await uow.commit()
                return
            await self._give_up(task, shop, exc, context)
            return
        except WritebackError as exc:
            await self._give_up(task, shop, exc, context)
            return
        log.info("write-back done", extra={**context, "outcome": outcome})
        async with self.uow() as uow:
            await queue(uow).finish(task.id)
            await uow.timeline.add(_entry(task, shop, "marketplace-synced", {"outcome": outcome}))
            await uow.commit()

    async def _give_up(
        self, task: WritebackTask, shop: Shop | None, exc: Exception, context: dict[str, Any]
    ) -> None:
        """The ops alert: `marketplace-sync-failed` (notify pages ops) through the outbox, in
        the order's timeline, and an error log line, with the task given up, in one commit."""
        error = scrub(str(exc))
        log.error("write-back failed for good", extra={**context, "reason": error})
        async with self.uow() as uow:
            await queue(uow).give_up(task.id, error)
            if shop is not None:
                platform = shop.platform
            else:  # the shop is gone: the order's channel names its platform
                order = await uow.orders.get(task.order_id, pii=False)
                platform = "woocommerce" if order and order.channel == "woocommerce" else "shopify"
            failed = MarketplaceSyncFailed(
                order_id=task.order_id,
                platform=platform,
                shop=shop.domain if shop else task.shop_id,
                operation=MarketplaceOperation(task.kind),
                external_id=task.external_id,
                tracking_number=task.payload.get("tracking_number"),
                attempts=max(task.attempts, 1),
                error=error,
                failed_at=datetime.now(UTC),
            )
            await uow.timeline.add(uow.emit(failed, time=failed.failed_at))
            await uow.commit()

    def _backoff(self, attempts: int) -> float:
        ceiling = min(self.backoff_max_s, self.backoff_s * 2 ** max(attempts - 1, 0))
        return random.uniform(ceiling / 2, ceiling)


_EMAIL = re.compile(r"[^\s@]+@[^\s@]+")


def scrub(reason: str) -> str:
    """A platform's error as ops may read it: no e-mail addresses, at most 500 characters."""
    return _EMAIL.sub("<email>", reason)[:500] or "unknown error"


def _entry(task: WritebackTask, shop: Shop | None, kind: str, extra: dict[str, Any]) -> Envelope:
    data = {
        "operation": task.kind,
        "platform": shop.platform if shop else None,
        "shop_id": task.shop_id,
        "external_id": task.external_id,
        "attempts": task.attempts,
        **({"tracking_number": task.payload["tracking_number"]} if task.kind == "fulfil" else {}),
        **extra,
    }
    return Envelope(
        id=str(uuid.uuid4()),
        type=kind,
        source="order",
        subject=task.order_id,
        time=datetime.now(UTC),
        dataschema=f"{kind}/v1",
        data=data,
    )


async def run_writebacks(runtime: Any, alarm: Alarm) -> None:
    """Background job of the order service (`ServiceRuntime` background); `alarm` is the
    one the order service's units of work wake when they queue a write-back."""
    s = runtime.settings
    async with guarded_client(s.egress_policy(), timeout=s.writeback_timeout_s) as http:
        worker = WritebackWorker(
            runtime.uow,
            http,
            max_attempts=s.writeback_max_attempts,
            backoff_s=s.writeback_backoff_s,
            backoff_max_s=s.writeback_backoff_max_s,
            lease_s=s.writeback_lease_s,
            refund_money=s.writeback_refund_money,
        )
        await worker.run(alarm)
