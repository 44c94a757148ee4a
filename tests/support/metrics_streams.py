"""Random order histories for the metrics rollup tests: every order event, awkward cases.

Orders spread over three calendar months (so windows cut months), several suppliers
and channels, re-confirmations by another supplier, costs in another currency,
repeated deliveries on later days, routing failures on several days, holds, notices,
and events published out of order and more than once.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from shared.events import (
    ConfirmedLine,
    DelayReason,
    Envelope,
    HoldReason,
    NotificationSent,
    OrderCancelled,
    OrderHeld,
    OrderPlaced,
    OrderReleased,
    OrderRoutingFailed,
    PlacedLine,
    RoutingFailureReason,
    Severity,
    ShipmentDelayed,
    ShipmentDelivered,
    ShipmentDispatched,
    SupplierConfirmed,
    new_envelope,
)

EPOCH = datetime(2026, 1, 28, tzinfo=UTC)
SPAN_DAYS = 75
SUPPLIERS = ("sup_a", "sup_b", "sup_c")
CHANNELS = ("storefront", "shopify")


def _money(rnd: random.Random) -> Decimal:
    return Decimal(rnd.randrange(0, 50_000)) / 100


def _order(rnd: random.Random, n: int) -> list[Envelope]:
    """One order's events in causal order (the caller shuffles some)."""
    oid = f"ord_{n:05d}"
    placed_at = EPOCH + timedelta(seconds=rnd.randrange(SPAN_DAYS * 86400))
    lines = [
        PlacedLine(
            line_id=f"{oid}-{k}",
            sku=f"SKU-{k}",
            quantity=rnd.randint(1, 3),
            unit_price=_money(rnd),
        )
        for k in range(rnd.randint(1, 3))
    ]
    currency = rnd.choice(("USD", "USD", "EUR"))
    out: list[Envelope] = []
    if rnd.random() < 0.9:
        data = OrderPlaced(
            order_id=oid,
            channel=rnd.choice(CHANNELS),
            currency=currency,
            lines=lines,
            shipping_country="US",
            shipping_postal_code="10001",
            placed_at=placed_at,
        )
        out.append(new_envelope(data, time=placed_at))
    moment = placed_at
    if rnd.random() < 0.15:
        moment += timedelta(minutes=rnd.randrange(1, 3000))
        out.append(new_envelope(OrderHeld(order_id=oid, reason=rnd.choice(list(HoldReason)),
                                          held_at=moment), time=moment))  # fmt: skip
        if rnd.random() < 0.7:
            moment += timedelta(minutes=rnd.randrange(1, 600))
            out.append(new_envelope(OrderReleased(order_id=oid, released_at=moment), time=moment))
    for _ in range(rnd.choice((0, 0, 1, 2))):
        moment += timedelta(hours=rnd.uniform(0.01, 40))
        failed = OrderRoutingFailed(
            order_id=oid,
            line_ids=[line.line_id for line in lines],
            reason=rnd.choice(list(RoutingFailureReason)),
        )
        out.append(new_envelope(failed, time=moment))
    for _ in range(rnd.choice((0, 1, 1, 1, 2))):
        supplier = rnd.choice(SUPPLIERS)
        confirmed_at = moment + timedelta(seconds=rnd.choice((0, 1, 59, rnd.randrange(1, 90000))))
        ship_by = confirmed_at + timedelta(hours=rnd.choice((24, 48, 72)))
        chosen = rnd.sample(lines, rnd.randint(1, len(lines)))
        confirmed = SupplierConfirmed(
            order_id=oid,
            supplier_id=supplier,
            supplier_order_ref=f"ref-{oid}-{supplier}",
            lines=[
                ConfirmedLine(line_id=ln.line_id, quantity=ln.quantity, unit_cost=_money(rnd))
                for ln in chosen
            ],
            currency=currency if rnd.random() < 0.9 else "GBP",
            ship_by=ship_by,
        )
        out.append(new_envelope(confirmed, time=confirmed_at))
        if rnd.random() < 0.3:
            delayed = ShipmentDelayed(
                order_id=oid,
                supplier_id=supplier,
                reason=rnd.choice(list(DelayReason)),
                severity=rnd.choice(list(Severity)),
            )
            out.append(
                new_envelope(delayed, time=ship_by + timedelta(minutes=rnd.randrange(-60, 60)))
            )
        if rnd.random() < 0.75:
            dispatched_at = confirmed_at + timedelta(hours=rnd.uniform(1, 90))
            tracking = f"TRK-{oid}-{supplier}-{rnd.randrange(3)}"
            sent = ShipmentDispatched(
                order_id=oid,
                supplier_id=supplier,
                carrier="ups",
                tracking_number=tracking,
                line_ids=[ln.line_id for ln in chosen],
            )
            out.append(new_envelope(sent, time=dispatched_at))
            delivered_at = dispatched_at
            for _ in range(rnd.choice((0, 1, 1, 2))):
                delivered_at += timedelta(hours=rnd.uniform(0.5, 80))
                delivered = ShipmentDelivered(
                    order_id=oid, tracking_number=tracking, delivered_at=delivered_at
                )
                out.append(new_envelope(delivered, time=delivered_at))
    if rnd.random() < 0.15:
        moment += timedelta(hours=rnd.uniform(0, 30))
        reason = rnd.choice(("customer_request", "fraud"))
        out.append(new_envelope(OrderCancelled(order_id=oid, reason=reason), time=moment))
    for _ in range(rnd.choice((0, 1, 2))):
        moment += timedelta(minutes=rnd.randrange(1, 2000))
        notice = NotificationSent(
            order_id=oid,
            kind=rnd.choice(("confirmation", "delay")),
            channel="email",
            recipient_kind="customer",
            status=rnd.choice(("sent", "sent", "failed")),
        )
        out.append(new_envelope(notice, time=moment))
    return out


def random_history(rnd: random.Random, orders: int) -> list[Envelope]:
    """Every event of `orders` random orders, partly shuffled, some published twice."""
    events = [e for n in range(orders) for e in _order(rnd, n)]
    for i in range(len(events) // 3):  # a third of the events swap with a random other
        j = rnd.randrange(len(events))
        events[i], events[j] = events[j], events[i]
    repeats = [e for e in events if rnd.random() < 0.1]
    return events + repeats
