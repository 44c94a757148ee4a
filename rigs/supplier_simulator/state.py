"""State of the simulated suppliers: control, seeded randomness, orders, idempotency.

Kept in memory and, with a state folder, written through to `store.StateFile` at every
change, so a restarted simulator reloads it (`Supplier.restore`).

Every mutation here is a plain (non-async) method: it runs to completion on the event loop
without yielding, so concurrent requests can never interleave inside one. That is what makes
"check the idempotency key, then create" atomic without a lock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import string
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rigs.supplier_simulator.callbacks import utc_now
from rigs.supplier_simulator.errors import IdempotencyKeyReused, OutOfStock
from rigs.supplier_simulator.models import PlaceOrderRequest, ReturnRequest, SupplierControl
from rigs.supplier_simulator.store import CONTROL, ORDER, RETURN, StateFile

CARRIERS = ("ups", "fedex", "dhl", "usps")
REQUEST_LOG = 10_000
"""Arrival times of the newest supplier API requests kept per supplier."""


class OrderState(StrEnum):
    RECEIVED = "received"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    BACKORDERED = "backordered"
    DISPATCHED = "dispatched"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"


SHIPPABLE = frozenset({OrderState.ACCEPTED, OrderState.BACKORDERED})
CANCELLABLE = frozenset({OrderState.RECEIVED, *SHIPPABLE, OrderState.CANCELLED})


def tracking_number(carrier: str, rng: random.Random) -> str:
    """A number shaped like the carrier's own (UPS 1Z…, FedEx 12 digits, DHL 10, USPS 22)."""

    def digits(n: int) -> str:
        return "".join(rng.choice(string.digits) for _ in range(n))

    if carrier == "ups":
        return "1Z" + "".join(rng.choice(string.digits + string.ascii_uppercase) for _ in range(16))
    if carrier == "fedex":
        return digits(12)
    if carrier == "dhl":
        return digits(10)
    return "9400" + digits(18)


@dataclass(frozen=True)
class Plan:
    """An order's fate, drawn when it is received so a seeded run replays identically."""

    decision: OrderState
    ships: bool
    ship_after_s: float
    deliver_after_s: float | None
    carrier: str
    tracking_number: str


@dataclass
class SimOrder:
    supplier_order_ref: str
    idempotency_key: str
    fingerprint: str
    request: PlaceOrderRequest
    plan: Plan
    received_at: str = field(default_factory=utc_now)
    state: OrderState = OrderState.RECEIVED
    carrier: str | None = None
    tracking_number: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    state_at: float = field(default_factory=time.time)
    """When (Unix time) the order entered its state: a restart waits only what is left."""
    cancelled: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    def tried(self, kind: str, type_: str) -> bool:
        """Whether this callback or tracking update was delivered (or given up on) already."""
        return any(e["kind"] == kind and e["type"] == type_ for e in self.events)

    def record(self) -> dict[str, Any]:
        return {
            "supplier_order_ref": self.supplier_order_ref,
            "idempotency_key": self.idempotency_key,
            "fingerprint": self.fingerprint,
            "request": self.request.model_dump(mode="json"),
            "plan": {**self.plan.__dict__, "decision": self.plan.decision.value},
            "received_at": self.received_at,
            "state": self.state.value,
            "state_at": self.state_at,
            "carrier": self.carrier,
            "tracking_number": self.tracking_number,
            "events": self.events,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> SimOrder:
        plan = dict(data["plan"])
        order = cls(
            supplier_order_ref=data["supplier_order_ref"],
            idempotency_key=data["idempotency_key"],
            fingerprint=data["fingerprint"],
            request=PlaceOrderRequest.model_validate(data["request"]),
            plan=Plan(**{**plan, "decision": OrderState(plan["decision"])}),
            received_at=data["received_at"],
            state=OrderState(data["state"]),
            carrier=data["carrier"],
            tracking_number=data["tracking_number"],
            events=list(data["events"]),
            state_at=float(data["state_at"]),
        )
        if order.state is OrderState.CANCELLED:
            order.cancelled.set()
        return order

    @property
    def callback_url(self) -> str:
        return str(self.request.callback_url)

    def response(self) -> dict[str, str]:
        return {"supplier_order_ref": self.supplier_order_ref, "status": "received"}

    def status(self) -> dict[str, Any]:
        reason = {
            OrderState.REJECTED: "simulated rejection",
            OrderState.BACKORDERED: "simulated backorder",
        }.get(self.state)
        return {
            "supplier_order_ref": self.supplier_order_ref,
            "reference": self.request.reference,
            "status": self.state.value,
            "reason": reason,
            "carrier": self.carrier,
            "tracking_number": self.tracking_number,
        }

    def view(self) -> dict[str, Any]:
        return {
            "supplier_order_ref": self.supplier_order_ref,
            "idempotency_key": self.idempotency_key,
            "reference": self.request.reference,
            "order_id": self.request.order_id,
            "lines": [line.model_dump() for line in self.request.lines],
            "ship_to": self.request.ship_to.model_dump(),
            "callback_url": self.callback_url,
            "state": self.state.value,
            "received_at": self.received_at,
            "carrier": self.carrier,
            "tracking_number": self.tracking_number,
            "events": list(self.events),
        }


@dataclass
class SimReturn:
    """A return request and the supplier's decision on it, kept per Idempotency-Key."""

    idempotency_key: str
    fingerprint: str
    request: ReturnRequest
    rma: str | None
    refused_reason: str | None
    received_at: str = field(default_factory=utc_now)
    requests: int = 1

    def view(self) -> dict[str, Any]:
        return {
            "idempotency_key": self.idempotency_key,
            **self.request.model_dump(),
            "status": "granted" if self.rma else "refused",
            "rma": self.rma,
            "refused_reason": self.refused_reason,
            "received_at": self.received_at,
            "requests": self.requests,
        }

    def record(self) -> dict[str, Any]:
        return {
            "idempotency_key": self.idempotency_key,
            "fingerprint": self.fingerprint,
            "request": self.request.model_dump(mode="json"),
            "rma": self.rma,
            "refused_reason": self.refused_reason,
            "received_at": self.received_at,
            "requests": self.requests,
        }

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> SimReturn:
        return cls(**{**data, "request": ReturnRequest.model_validate(data["request"])})


def fingerprint(request: PlaceOrderRequest | ReturnRequest) -> str:
    canonical = json.dumps(request.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class Supplier:
    """One simulated supplier: its control settings, its random stream and its orders."""

    def __init__(self, key: str, base_seed: int | None, store: StateFile | None = None) -> None:
        self.key = key
        self.store = store
        self.base_seed = base_seed
        self.control = SupplierControl.defaults(key)
        self.rng = random.Random()
        self.reseed()
        self.orders: dict[str, SimOrder] = {}
        self.by_idempotency_key: dict[str, SimOrder] = {}
        self.returns: dict[str, SimReturn] = {}  # by Idempotency-Key
        self.requests: deque[str] = deque(maxlen=REQUEST_LOG)  # when each API request came
        self.tasks: set[asyncio.Task[None]] = set()

    def restore(self, records: dict[str, list[dict[str, Any]]]) -> None:
        """Take back what the state file kept (control, orders, returns); saves nothing."""
        for control in records.get(CONTROL, [])[-1:]:
            self.control = SupplierControl.model_validate(control)
            self.reseed()
        for data in records.get(ORDER, []):
            order = SimOrder.from_record(data)
            self.orders[order.supplier_order_ref] = order
            self.by_idempotency_key[order.idempotency_key] = order
        for data in records.get(RETURN, []):
            decided = SimReturn.from_record(data)
            self.returns[decided.idempotency_key] = decided

    def save(self, order: SimOrder) -> None:
        if self.store is not None:
            self.store.put(ORDER, self.key, order.supplier_order_ref, order.record())

    def _save_control(self) -> None:
        if self.store is not None:
            self.store.put(CONTROL, self.key, "", self.control.model_dump(mode="json"))

    def _save_return(self, decided: SimReturn) -> None:
        if self.store is not None:
            self.store.put(RETURN, self.key, decided.idempotency_key, decided.record())

    def reseed(self) -> None:
        """Restart the random stream from the supplier's seed (or the process seed)."""
        if self.control.seed is not None:
            self.rng.seed(self.control.seed)
        elif self.base_seed is not None:
            self.rng.seed(f"{self.base_seed}:{self.key}")
        else:
            self.rng.seed()

    def update(self, changes: dict[str, Any]) -> SupplierControl:
        self.control = self.control.model_copy(update=changes)
        if "seed" in changes:
            self.reseed()
        self._save_control()
        return self.control

    def roll(self, rate: float) -> bool:
        """One draw from the stream (always consumed, so runs stay aligned)."""
        return self.rng.random() < rate

    def place(self, idempotency_key: str, request: PlaceOrderRequest) -> tuple[SimOrder, bool]:
        """The order for this key: the existing one (False) or a newly received one (True).

        Raises `IdempotencyKeyReused` when the key was used for a different request and
        `OutOfStock` (recording nothing) when a line names an out-of-stock supplier SKU.
        """
        digest = fingerprint(request)
        existing = self.by_idempotency_key.get(idempotency_key)
        if existing is not None:
            if existing.fingerprint != digest:
                raise IdempotencyKeyReused(
                    reason="this Idempotency-Key was used for a different request",
                    supplier_order_ref=existing.supplier_order_ref,
                )
            return existing, False
        missing = set(self.control.out_of_stock_skus)
        skus = list(
            dict.fromkeys(ln.supplier_sku for ln in request.lines if ln.supplier_sku in missing)
        )
        if skus:
            raise OutOfStock(skus=skus)
        order = SimOrder(
            supplier_order_ref=self._new_ref(),
            idempotency_key=idempotency_key,
            fingerprint=digest,
            request=request,
            plan=self._draw_plan(),
        )
        self.orders[order.supplier_order_ref] = order
        self.by_idempotency_key[idempotency_key] = order
        self.save(order)
        return order, True

    def ask_return(self, idempotency_key: str, request: ReturnRequest) -> SimReturn:
        """The decision on this return: the first one for a key already used (same body),
        else granted (a new RMA) or refused, as the control says now."""
        digest = fingerprint(request)
        existing = self.returns.get(idempotency_key)
        if existing is not None:
            if existing.fingerprint != digest:
                raise IdempotencyKeyReused(
                    reason="this Idempotency-Key was used for a different return request"
                )
            existing.requests += 1
            self._save_return(existing)
            return existing
        refused = self.control.rma_refuse
        decided = SimReturn(
            idempotency_key=idempotency_key,
            fingerprint=digest,
            request=request,
            rma=None if refused else f"RMA-{self.rng.getrandbits(40):010X}",
            refused_reason=self.control.rma_refuse_reason if refused else None,
        )
        self.returns[idempotency_key] = decided
        self._save_return(decided)
        return decided

    def _new_ref(self) -> str:
        while True:
            ref = f"SIM-{self.rng.getrandbits(48):012X}"
            if ref not in self.orders:
                return ref

    def _draw_plan(self) -> Plan:
        c = self.control
        draw = self.rng.random()
        if draw < c.reject_rate:
            decision = OrderState.REJECTED
        elif draw < c.reject_rate + c.backorder_rate:
            decision = OrderState.BACKORDERED
        else:
            decision = OrderState.ACCEPTED
        carrier = self.rng.choice(CARRIERS)
        return Plan(
            decision=decision,
            ships=decision is not OrderState.REJECTED and not c.never_ship,
            ship_after_s=c.ship_after_s,
            deliver_after_s=c.deliver_after_s,
            carrier=carrier,
            tracking_number=tracking_number(carrier, self.rng),
        )

    def stats(self) -> dict[str, Any]:
        states: Counter[str] = Counter(o.state.value for o in self.orders.values())
        deliveries: dict[str, Counter[str]] = {}
        for order in self.orders.values():
            for event in order.events:
                kind = f"{event['kind']}:{event['type']}"
                deliveries.setdefault(kind, Counter())[str(event["status"])] += 1
        return {
            "orders": len(self.orders),
            "states": dict(states),
            "deliveries": {k: dict(v) for k, v in deliveries.items()},
            "given_up": sum(c["failed"] for c in deliveries.values()),
        }

    def advance(self, order: SimOrder, allowed: frozenset[OrderState], to: OrderState) -> bool:
        """Move `order` to `to` if it is in one of `allowed`; False (no change) otherwise."""
        if order.state not in allowed:
            return False
        order.state, order.state_at = to, time.time()
        if to is OrderState.CANCELLED:
            order.cancelled.set()
        if to is OrderState.DISPATCHED:
            order.carrier = order.plan.carrier
            order.tracking_number = order.plan.tracking_number
        self.save(order)
        return True
