"""The supplier order aggregate: its lifecycle as a state enum with legal moves. No I/O.

A supplier order is the part of a customer order that one supplier ships. Its states are
the strings stored in `supplier_order.state`:

    sending --(supplier took it)--> received --accept--> accepted --dispatch--> dispatched
       |                              |  |                  |                     |
       |                              |  +--backorder--> backordered            deliver
       |                              |                     |                     v
       +-- placing failed: rejected | out_of_stock | unavailable             delivered
       +-- reject (any undecided state) --> rejected

    customer cancelled: to_send --> cancelled; sending | received | accepted | backordered
        --> cancel_pending --(claimed)--> cancelling --> cancelled, or back to
        cancel_pending to retry, or cancel_failed after CANCEL_ATTEMPTS
    a supplier accepting an order we gave up on (unavailable, cancelled) --> cancel_pending,
        unless it is unavailable and its lines still wait for a supplier: then it is
        kept (unavailable --> received, then accepted or dispatched as the supplier says)
    a waiting line routed to the same supplier again: unavailable --> sending, placed again
        under its own id (the idempotency key), so a supplier that took it the first time
        answers with that order and nothing is bought twice

`SOURCES` is the whole table: which states each action may start from. Every move is a
method that raises `IllegalTransition` from any other state, changes nothing before it
has checked, and records what it causes: events in `events` (written to the outbox by
the repository, never published here) and the supplier's track record in `tally`.

Two moves are applied set-based by the repository for speed, from the same `SOURCES`:
`RECEIVE` (a batch of orders the suppliers took) and the dispatcher's `CLAIM_SEND` /
`CLAIM_CANCEL` (due work taken under a lease).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from services.supplier.domain.errors import IllegalTransition
from shared.events import (
    ConfirmedLine,
    DelayReason,
    EventData,
    Severity,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
)

CANCEL_ATTEMPTS = 12
"""Cancelling is retried with growing pauses (up to ~1 h in all), then left for a human."""


class State(StrEnum):
    TO_SEND = "to_send"  # queued for the dispatcher (older rows; new orders start `sending`)
    SENDING = "sending"  # being placed at the supplier under a process's lease
    RECEIVED = "received"  # the supplier took it; its decision is awaited
    BACKORDERED = "backordered"  # the supplier will ship, later
    ACCEPTED = "accepted"  # confirmed: the SLA clock runs until dispatch
    DISPATCHED = "dispatched"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    OUT_OF_STOCK = "out_of_stock"
    UNAVAILABLE = "unavailable"  # no usable answer (timeouts, 5xx, open breaker)
    CANCEL_PENDING = "cancel_pending"  # to be called off at the supplier
    CANCELLING = "cancelling"  # being called off under a process's lease
    CANCELLED = "cancelled"
    CANCEL_FAILED = "cancel_failed"  # the supplier would not cancel: a human takes over


class Action(StrEnum):
    RECEIVE = "record the supplier taking it"
    FAIL = "record that placing it failed"
    ACCEPT = "accept"
    REJECT = "reject"
    BACKORDER = "backorder"
    DISPATCH = "dispatch"
    DELIVER = "deliver"
    REPORT_EXCEPTION = "report a carrier exception"
    CHECK_SLA = "check the SLA clock"
    CALL_OFF = "call off for the customer"
    CALL_OFF_LATE = "call off a late acceptance"
    CLAIM_SEND = "claim for sending"
    CLAIM_CANCEL = "claim for cancelling"
    FINISH_CANCEL = "record the cancellation's outcome"
    RESEND = "place again under its own key"
    RECOVER = "keep an order the supplier took after all"


_UNDECIDED = frozenset({State.SENDING, State.RECEIVED, State.BACKORDERED})
SOURCES: dict[Action, frozenset[State]] = {
    Action.RECEIVE: frozenset({State.SENDING}),
    Action.FAIL: frozenset({State.SENDING}),
    Action.ACCEPT: _UNDECIDED,
    Action.REJECT: _UNDECIDED,
    Action.BACKORDER: frozenset({State.SENDING, State.RECEIVED}),
    Action.DISPATCH: _UNDECIDED | {State.ACCEPTED},
    Action.DELIVER: frozenset({State.DISPATCHED}),
    Action.REPORT_EXCEPTION: frozenset({State.DISPATCHED}),
    Action.CHECK_SLA: frozenset({State.ACCEPTED}),
    Action.CALL_OFF: _UNDECIDED | {State.TO_SEND, State.ACCEPTED},
    Action.CALL_OFF_LATE: frozenset({State.UNAVAILABLE, State.CANCELLED}),
    Action.CLAIM_SEND: frozenset({State.TO_SEND, State.SENDING}),  # sending: lease expired
    Action.CLAIM_CANCEL: frozenset({State.CANCEL_PENDING, State.CANCELLING}),
    Action.FINISH_CANCEL: frozenset({State.CANCEL_PENDING, State.CANCELLING}),
    Action.RESEND: frozenset({State.UNAVAILABLE}),
    Action.RECOVER: frozenset({State.UNAVAILABLE}),
}

FAILED = frozenset({State.REJECTED, State.OUT_OF_STOCK, State.UNAVAILABLE})
"""Placing failed: the lines go to the next-ranked supplier."""
WAITING_FOR_DECISION = frozenset({State.RECEIVED, State.BACKORDERED})
"""Placed at the supplier, no decision called back yet: the reconciler asks after a while."""
PASSED_OVER = FAILED | {State.BACKORDERED, State.CANCEL_PENDING, State.CANCELLED}
"""A supplier that holds a line in one of these is not offered that line again."""
LIVE = frozenset(
    {
        State.TO_SEND,
        State.SENDING,
        State.RECEIVED,
        State.BACKORDERED,
        State.ACCEPTED,
        State.DISPATCHED,
        State.DELIVERED,
    }
)
"""A line held by a supplier order in one of these is with a supplier: not routed again."""
CALLED_OFF_LATE = "called off: taken after we gave up waiting for an answer"
"""The `failure` of an order we heard nothing back about, called off when the supplier
took it after its lines had gone elsewhere: the supplier never failed those lines, so it
is not ruled out for them for good (it may take them again if the others fail)."""
QUEUED = frozenset({State.TO_SEND, State.CANCEL_PENDING})
"""States the dispatcher picks up: entering one wakes it."""


@dataclass(frozen=True, slots=True)
class AllocatedLine:
    """One order line given to this supplier: what it ships, at what cost."""

    line_id: str
    sku: str
    supplier_sku: str
    quantity: int
    unit_cost: Decimal
    unit_price: Decimal
    currency: str


@dataclass(eq=False)
class SupplierOrder:
    id: str  # also the idempotency key at the supplier
    order_id: str
    supplier_id: str
    state: State
    lines: list[AllocatedLine]
    created_at: datetime
    supplier_order_ref: str | None = None
    failure: str | None = None
    attempts: int = 0
    lease_until: datetime | None = None
    sent_at: datetime | None = None
    confirmed_at: datetime | None = None
    ship_by: datetime | None = None
    sla_hours: float | None = None
    at_risk_sent: bool = False
    deadline_sent: bool = False
    major_sent: bool = False
    carrier: str | None = None
    tracking_number: str | None = None
    dispatched_at: datetime | None = None
    delivered_at: datetime | None = None
    next_check_at: datetime | None = None
    events: list[EventData] = field(default_factory=list, repr=False)
    tally: Counter[str] = field(default_factory=Counter, repr=False)
    """Increments of the supplier's counters (decided, accepted, shipped, ...) this change earns."""

    @classmethod
    def place(
        cls,
        so_id: str,
        order_id: str,
        supplier_id: str,
        lines: list[AllocatedLine],
        *,
        now: datetime,
        lease_until: datetime,
    ) -> SupplierOrder:
        """A new supplier order, being sent by this process until `lease_until`."""
        return cls(
            so_id,
            order_id,
            supplier_id,
            State.SENDING,
            lines,
            now,
            attempts=1,
            lease_until=lease_until,
        )

    # -- questions --------------------------------------------------------------------
    def can(self, action: Action) -> bool:
        return self.state in SOURCES[action]

    def ensure(self, action: Action) -> None:
        """Raise `IllegalTransition` unless `action` is legal now (before work it depends on)."""
        if self.state not in SOURCES[action]:
            raise IllegalTransition(self.id, self.state.value, action.value)

    @property
    def given_up(self) -> bool:
        """We stopped waiting for this supplier (or the customer cancelled): if it takes the
        order after all, it is called off so the goods are never bought twice."""
        return self.can(Action.CALL_OFF_LATE)

    @property
    def currency(self) -> str:
        return self.lines[0].currency if self.lines else ""

    # -- placing ----------------------------------------------------------------------
    def placing_failed(self, outcome: State, failure: str) -> None:
        """The supplier refused (`rejected`, `out_of_stock`) or never answered (`unavailable`)."""
        if outcome not in FAILED:
            raise ValueError(f"{outcome} is not a failed placement")
        self.ensure(Action.FAIL)
        self.state, self.failure, self.lease_until = outcome, failure[:200], None
        if outcome is State.REJECTED:
            self.tally["decided"] += 1

    def resend(self, lease_until: datetime) -> None:
        """Placed again, under this process's lease: the supplier gave no usable answer
        (a timeout may still have created the order there), so the same id (the
        idempotency key) goes out again and a supplier that has it answers with it."""
        self.ensure(Action.RESEND)
        self.state, self.failure, self.lease_until = State.SENDING, None, lease_until

    def taken_after_all(self, ref: str | None) -> None:
        """The supplier took the order we heard nothing back about, and its lines still
        wait for a supplier: kept as received (its decision is applied next)."""
        self.ensure(Action.RECOVER)
        self.state, self.failure, self.lease_until = State.RECEIVED, None, None
        self.supplier_order_ref = ref or self.supplier_order_ref

    # -- the supplier's decisions -----------------------------------------------------
    def accept(self, ref: str | None, sla_hours: float, now: datetime) -> None:
        """Confirmed: the SLA clock starts, `supplier-confirmed` is recorded."""
        self.ensure(Action.ACCEPT)
        if self.state is not State.BACKORDERED:  # a backorder was already counted as decided
            self.tally.update(decided=1, accepted=1)
        ref = ref or self.supplier_order_ref
        self.state, self.supplier_order_ref = State.ACCEPTED, ref
        self.confirmed_at, self.sla_hours = now, sla_hours
        self.ship_by = now + timedelta(hours=sla_hours)
        self.lease_until = self.next_check_at = None
        self.events.append(
            SupplierConfirmed(
                order_id=self.order_id,
                supplier_id=self.supplier_id,
                supplier_order_ref=ref or self.id,
                lines=[
                    ConfirmedLine(line_id=a.line_id, quantity=a.quantity, unit_cost=a.unit_cost)
                    for a in self.lines
                ],
                currency=self.currency,
                ship_by=self.ship_by,
            )
        )

    def reject(self, reason: str) -> None:
        self.ensure(Action.REJECT)
        self.state, self.failure, self.lease_until = State.REJECTED, reason[:200], None
        self.tally["decided"] += 1

    def backorder(self, ref: str | None, next_check_at: datetime, *, moved: bool) -> None:
        """The supplier cannot ship yet. `moved`: other suppliers took every line, so this
        one is called off; otherwise it is kept, checked on, and the order is delayed."""
        self.ensure(Action.BACKORDER)
        self.tally["decided"] += 1
        if moved:
            self.state, self.failure = State.CANCEL_PENDING, "backordered"
            return
        self.state = State.BACKORDERED
        self.supplier_order_ref = ref or self.supplier_order_ref
        self.lease_until, self.next_check_at = None, next_check_at
        self.events.append(
            ShipmentDelayed(
                order_id=self.order_id,
                supplier_id=self.supplier_id,
                reason=DelayReason.SUPPLIER_BACKORDER,
                severity=Severity.URGENT,
                expected_by=None,
            )
        )

    def dispatch(
        self, carrier: str, tracking_number: str, ref: str | None, sla_hours: float, now: datetime
    ) -> None:
        """Shipped with tracking; an order not yet accepted is accepted first."""
        self.ensure(Action.DISPATCH)
        if not tracking_number:
            raise ValueError("a dispatch needs a tracking number")
        if self.state is not State.ACCEPTED:
            self.accept(ref, sla_hours, now)
        on_time = self.ship_by is None or now <= self.ship_by
        self.state, self.carrier, self.tracking_number = State.DISPATCHED, carrier, tracking_number
        self.dispatched_at, self.lease_until = now, None
        self.next_check_at = None  # asked about again if its delivery is not reported
        self.tally.update(shipped=1, shipped_on_time=1 if on_time else 0)
        self.events.append(
            ShipmentDispatched(
                order_id=self.order_id,
                supplier_id=self.supplier_id,
                carrier=carrier,
                tracking_number=tracking_number,
                line_ids=[a.line_id for a in self.lines],
            )
        )

    # -- the carrier ------------------------------------------------------------------
    def deliver(self, when: datetime) -> None:
        self.ensure(Action.DELIVER)
        assert self.tracking_number is not None  # every dispatched order has one
        self.state, self.delivered_at = State.DELIVERED, when
        self.events.append(
            ShipmentDelivered(
                order_id=self.order_id, tracking_number=self.tracking_number, delivered_at=when
            )
        )

    def report_exception(self) -> None:
        self.ensure(Action.REPORT_EXCEPTION)
        self.tally["exceptions"] += 1
        self.events.append(
            ShipmentDelayed(
                order_id=self.order_id,
                supplier_id=self.supplier_id,
                reason=DelayReason.CARRIER_EXCEPTION,
                severity=Severity.URGENT,
                expected_by=None,
            )
        )

    # -- the SLA clock ----------------------------------------------------------------
    def check_sla(self, now: datetime) -> int:
        """Record `at_risk` (75% of the window), `no_tracking_by_deadline` (at `ship_by`)
        and its `major` escalation (twice the window), each once; returns how many."""
        self.ensure(Action.CHECK_SLA)
        assert self.confirmed_at is not None and self.ship_by is not None
        confirmed, ship_by = self.confirmed_at, self.ship_by
        window = ship_by - confirmed
        fired = 0

        def delay(reason: DelayReason, severity: Severity) -> None:
            nonlocal fired
            fired += 1
            self.events.append(
                ShipmentDelayed(
                    order_id=self.order_id,
                    supplier_id=self.supplier_id,
                    reason=reason,
                    severity=severity,
                    expected_by=ship_by if reason is DelayReason.AT_RISK else None,
                )
            )

        if not self.at_risk_sent and now >= confirmed + window * 0.75:
            self.at_risk_sent = True
            delay(DelayReason.AT_RISK, Severity.NORMAL)
        if not self.deadline_sent and now >= ship_by:
            self.deadline_sent = True
            delay(DelayReason.NO_TRACKING_BY_DEADLINE, Severity.URGENT)
        if not self.major_sent and now >= confirmed + window * 2:
            self.major_sent = True
            delay(DelayReason.NO_TRACKING_BY_DEADLINE, Severity.MAJOR)
        return fired

    # -- calling off ------------------------------------------------------------------
    def call_off(self) -> None:
        """The customer cancelled: an unsent order is simply cancelled, a placed one is
        queued to be cancelled at the supplier. Its stock is the caller's to give back."""
        self.ensure(Action.CALL_OFF)
        self.state = State.CANCELLED if self.state is State.TO_SEND else State.CANCEL_PENDING

    def call_off_late_acceptance(self, ref: str | None) -> None:
        self.ensure(Action.CALL_OFF_LATE)
        if self.state is State.UNAVAILABLE:  # its lines went elsewhere meanwhile
            self.failure = CALLED_OFF_LATE
        self.state = State.CANCEL_PENDING
        self.supplier_order_ref = ref or self.supplier_order_ref

    def cancel_confirmed(self) -> None:
        self.ensure(Action.FINISH_CANCEL)
        self.state, self.lease_until = State.CANCELLED, None

    def cancel_refused(self, now: datetime) -> None:
        """Try again after a pause that doubles per attempt, or give up to a human."""
        self.ensure(Action.FINISH_CANCEL)
        if self.attempts >= CANCEL_ATTEMPTS:
            self.state, self.lease_until = State.CANCEL_FAILED, None
        else:
            pause = timedelta(seconds=min(2**self.attempts, 600))
            self.state, self.lease_until = State.CANCEL_PENDING, now + pause
