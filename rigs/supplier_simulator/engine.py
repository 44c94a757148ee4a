"""The simulator's behaviour: gating requests, placing and cancelling orders, order lifecycles."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import re
import time
from collections.abc import Coroutine
from typing import Any

import httpx

from rigs.supplier_simulator.callbacks import (
    SUPPLIER_CALLBACK,
    TRACKING_UPDATE,
    Deliverer,
    RetryPolicy,
    lost,
    utc_now,
)
from rigs.supplier_simulator.errors import (
    BadAddress,
    InvalidCredentials,
    NotCancellable,
    ReturnRefused,
    SimulatedFailure,
    UnknownOrder,
    UnknownSupplier,
)
from rigs.supplier_simulator.models import (
    SUPPLIER_KEY_PATTERN,
    PlaceOrderRequest,
    ReturnRequest,
    SupplierControl,
)
from rigs.supplier_simulator.settings import SimulatorSettings
from rigs.supplier_simulator.state import (
    CANCELLABLE,
    SHIPPABLE,
    OrderState,
    SimOrder,
    Supplier,
)
from rigs.supplier_simulator.store import StateFile
from shared.logging import log_context

log = logging.getLogger(__name__)

_KEY = re.compile(SUPPLIER_KEY_PATTERN)
_REASONS = {
    OrderState.REJECTED: "simulated rejection",
    OrderState.BACKORDERED: "simulated backorder",
}


class Simulator:
    """All simulated suppliers plus the background tasks that call back on their orders.

    Suppliers spring into existence, with default settings, the first time their key is used.
    `start()` hands in the shared outbound client (from the app's lifespan) and, with a state
    folder, carries on every order the file remembers; `stop()` cancels every pending
    callback (a restart sends again whatever was not delivered yet).
    """

    def __init__(self, settings: SimulatorSettings) -> None:
        self.settings = settings
        self._suppliers: dict[str, Supplier] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._deliverer: Deliverer | None = None
        self._store: StateFile | None = None

    # lifecycle -------------------------------------------------------------------------

    def start(self, client: httpx.AsyncClient) -> None:
        s = self.settings
        policy = RetryPolicy(
            s.callback_max_attempts, s.callback_backoff_s, s.callback_backoff_max_s
        )
        self._deliverer = Deliverer(client, policy)
        if self.settings.state_dir is not None:
            self._store = StateFile(self.settings.state_dir)
            for key, records in self._store.load().items():
                supplier = self._suppliers[key] = Supplier(key, self.settings.seed, self._store)
                supplier.restore(records)
                for order in supplier.orders.values():
                    if order.state is not OrderState.CANCELLED:
                        self._spawn(supplier, self._run(supplier, order, resumed=True), "resume")
            if self._suppliers:
                log.info("state reloaded from %s", self._store.path)

    async def stop(self) -> None:
        await _cancel_all(self._tasks)
        self._deliverer = None
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def pending_tasks(self) -> int:
        return len(self._tasks)

    # suppliers -------------------------------------------------------------------------

    def supplier(self, key: str) -> Supplier:
        if not _KEY.match(key):
            raise UnknownSupplier(reason=f"no supplier {key!r}")
        found = self._suppliers.get(key)
        if found is None:
            found = self._suppliers[key] = Supplier(key, self.settings.seed, self._store)
        return found

    def authenticate(self, key: str, authorization: str | None) -> Supplier:
        """The supplier whose api_key the bearer token is; a refused call creates nothing."""
        known = self._suppliers.get(key)
        expected = known.control.api_key if known else SupplierControl.defaults(key).api_key
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), expected.encode()
        ):
            raise InvalidCredentials(reason="missing or invalid bearer api key")
        return known or self.supplier(key)

    async def reset(self, key: str) -> Supplier:
        """Forget the supplier's orders, settings and pending callbacks."""
        old = self._suppliers.pop(key, None)
        if old is not None:
            await _cancel_all(old.tasks)
        if self._store is not None:
            self._store.forget(key)
        return self.supplier(key)

    # the supplier API ------------------------------------------------------------------

    async def gate(self, supplier: Supplier) -> None:
        """Answer late (`latency_ms`), sometimes fail (`fail_http_rate`), before anything else."""
        supplier.requests.append(utc_now())  # every request, failed ones too
        if supplier.control.latency_ms:
            await asyncio.sleep(supplier.control.latency_ms / 1000)
        if supplier.roll(supplier.control.fail_http_rate):
            raise SimulatedFailure(reason="simulated transient failure; nothing was recorded")

    def place_order(
        self, supplier: Supplier, idempotency_key: str, request: PlaceOrderRequest
    ) -> SimOrder:
        missing = request.ship_to.missing()
        if missing:  # names the fields, never their values
            raise BadAddress(reason=f"bad_address: missing {', '.join(missing)}", fields=missing)
        order, created = supplier.place(idempotency_key, request)
        if created:
            with log_context(order_id=request.order_id):
                log.info(
                    "order %s (%s) received by %s; plan: %s",
                    order.supplier_order_ref,
                    request.reference,
                    supplier.key,
                    order.plan.decision.value,
                )
                self._spawn(supplier, self._run(supplier, order), order.supplier_order_ref)
        return order

    async def request_return(
        self, supplier: Supplier, idempotency_key: str, request: ReturnRequest
    ) -> dict[str, str]:
        """Decide (and keep) first, then answer `rma_latency_ms` late: a caller that gave up
        waiting finds the same RMA when it asks again with the same key."""
        decided = supplier.ask_return(idempotency_key, request)
        if supplier.control.rma_latency_ms:
            await asyncio.sleep(supplier.control.rma_latency_ms / 1000)
        if decided.rma is None:
            raise ReturnRefused(reason=decided.refused_reason or "refused")
        return {
            "rma": decided.rma,
            "status": "granted",
            "return_address": supplier.control.return_address,
        }

    def order(self, supplier: Supplier, ref: str) -> SimOrder:
        order = supplier.orders.get(ref)
        if order is None:
            raise UnknownOrder(reason=f"no order {ref!r}")
        return order

    def cancel(self, supplier: Supplier, ref: str) -> SimOrder:
        order = self.order(supplier, ref)
        if not supplier.advance(order, CANCELLABLE, OrderState.CANCELLED):
            raise NotCancellable(reason=f"order is {order.state.value}", state=order.state.value)
        return order

    # background ------------------------------------------------------------------------

    def _spawn(self, supplier: Supplier, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=f"simulator:{supplier.key}:{name}")
        self._tasks.add(task)
        supplier.tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            supplier.tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("order lifecycle %s crashed", t.get_name(), exc_info=t.exception())

        task.add_done_callback(done)

    async def _run(self, supplier: Supplier, order: SimOrder, *, resumed: bool = False) -> None:
        """Decide, then (maybe) dispatch, then (maybe) deliver, calling back at each step.

        The waits end early when the order is cancelled; the state checks make sure a
        cancelled order is never decided on or dispatched afterwards. `resumed` (after a
        restart): steps already taken are skipped, callbacks not yet delivered are sent,
        and the first wait lasts only what was left of it.
        """
        plan = order.plan

        def wait(seconds: float) -> float:
            nonlocal resumed
            left = max(0.0, order.state_at + seconds - time.time()) if resumed else seconds
            resumed = False
            return left

        if order.state is OrderState.RECEIVED:
            delay = supplier.control.decision_delay_s
            await _pause(order, wait(self.settings.decision_delay_s if delay is None else delay))
            if not supplier.advance(order, frozenset({OrderState.RECEIVED}), plan.decision):
                return  # cancelled before we decided
        if order.state is OrderState.CANCELLED:
            return
        if not order.tried(SUPPLIER_CALLBACK.kind, plan.decision.value):
            decision: dict[str, Any] = {"type": plan.decision.value}
            if plan.decision in _REASONS:
                decision["reason"] = _REASONS[plan.decision]
            await self._callback(supplier, order, decision)
        if not plan.ships:
            return
        if order.state in SHIPPABLE:
            await _pause(order, wait(plan.ship_after_s))
            if not supplier.advance(order, SHIPPABLE, OrderState.DISPATCHED):
                return  # cancelled meanwhile
        if order.state not in (OrderState.DISPATCHED, OrderState.DELIVERED):
            return
        if not order.tried(SUPPLIER_CALLBACK.kind, "dispatched"):
            dispatched = {
                "type": "dispatched",
                "carrier": plan.carrier,
                "tracking_number": plan.tracking_number,
            }
            await self._callback(supplier, order, dispatched)
        if plan.deliver_after_s is None:
            return  # the carrier never reports
        if not order.tried(TRACKING_UPDATE.kind, "in_transit"):
            await self._tracking(supplier, order, "in_transit", "picked up by carrier")
        if order.state is OrderState.DISPATCHED:
            await asyncio.sleep(wait(plan.deliver_after_s))
            supplier.advance(order, frozenset({OrderState.DISPATCHED}), OrderState.DELIVERED)
        if not order.tried(TRACKING_UPDATE.kind, "delivered"):
            await self._tracking(supplier, order, "delivered", "delivered to recipient")

    async def _callback(self, supplier: Supplier, order: SimOrder, fields: dict[str, Any]) -> None:
        payload = {
            "type": fields["type"],
            "supplier_order_ref": order.supplier_order_ref,
            "reference": order.request.reference,
            **{k: v for k, v in fields.items() if k != "type"},
            "occurred_at": utc_now(),
        }
        control = supplier.control
        if control.callback_delay_s:
            await asyncio.sleep(control.callback_delay_s)
        if control.lose_callbacks:  # as if every delivery attempt had failed
            order.events.append(lost(SUPPLIER_CALLBACK, order.callback_url, payload))
            supplier.save(order)
            return
        order.events.append(
            await self._outbound().deliver(
                SUPPLIER_CALLBACK, order.callback_url, payload, control.webhook_secret
            )
        )
        supplier.save(order)

    async def _tracking(
        self, supplier: Supplier, order: SimOrder, status: str, detail: str
    ) -> None:
        payload = {
            "carrier": order.plan.carrier,
            "tracking_number": order.plan.tracking_number,
            "status": status,
            "occurred_at": utc_now(),
            "detail": detail,
        }
        url = str(self.settings.tracking_url)
        secret = self.settings.tracking_secret.get_secret_value()
        order.events.append(await self._outbound().deliver(TRACKING_UPDATE, url, payload, secret))
        supplier.save(order)

    def _outbound(self) -> Deliverer:
        if self._deliverer is None:
            raise RuntimeError("simulator not started (enter the app's lifespan first)")
        return self._deliverer


async def _pause(order: SimOrder, seconds: float) -> None:
    """Wait `seconds`, or less if the order gets cancelled meanwhile."""
    with contextlib.suppress(TimeoutError):  # 3.11 wait_for can lose a cancel
        async with asyncio.timeout(seconds):
            await order.cancelled.wait()


async def _cancel_all(tasks: set[asyncio.Task[None]]) -> None:
    pending = list(tasks)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
