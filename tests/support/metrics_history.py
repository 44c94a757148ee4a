"""A known event history for the metrics tests, with the KPIs it must produce.

Five orders over three UTC days (1-3 March 2026) plus one the day before the window,
published with duplicates and out of order: order A's confirmation, dispatch and
delivery go out before A is placed, and order E (placed on day 1) is published last;
order B is held by hand (the hold delivered twice) and released on day 1.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
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

FIRST_DAY = date(2026, 3, 1)
LAST_DAY = date(2026, 3, 3)
S1, S2 = "sup_alpha", "sup_beta"


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return (
        datetime(2026, 3, day, hour, minute, tzinfo=UTC)
        if day > 0
        else datetime(2026, 2, 28, hour, minute, tzinfo=UTC)
    )


def placed(order_id: str, channel: str, currency: str, when: datetime, *lines) -> Envelope:
    data = OrderPlaced(
        order_id=order_id,
        channel=channel,
        currency=currency,
        lines=[
            PlacedLine(line_id=lid, sku=f"SKU-{lid}", quantity=q, unit_price=Decimal(p))
            for lid, q, p in lines
        ],
        shipping_country="US",
        shipping_postal_code="10001",
        placed_at=when,
    )
    return new_envelope(data, time=when)


def _confirmed(order_id, supplier, when, ship_by, *lines, currency="USD") -> Envelope:
    data = SupplierConfirmed(
        order_id=order_id,
        supplier_id=supplier,
        supplier_order_ref=f"ref-{order_id}-{supplier}",
        lines=[ConfirmedLine(line_id=lid, quantity=q, unit_cost=Decimal(c)) for lid, q, c in lines],
        currency=currency,
        ship_by=ship_by,
    )
    return new_envelope(data, time=when)


def history() -> list[Envelope]:
    """Every envelope in publish order, duplicates included."""
    a_placed = placed(
        "ord_A", "storefront", "USD", at(1, 10), ("a1", 2, "12.50"), ("a2", 1, "5.00")
    )
    a_conf = _confirmed("ord_A", S1, at(1, 10, 10), at(2, 10), ("a1", 2, "8.00"), ("a2", 1, "3.00"))
    a_disp = new_envelope(
        ShipmentDispatched(
            order_id="ord_A",
            supplier_id=S1,
            carrier="ups",
            tracking_number="T-A",
            line_ids=["a1", "a2"],
        ),
        time=at(1, 20),
    )
    a_deliv = new_envelope(
        ShipmentDelivered(order_id="ord_A", tracking_number="T-A", delivered_at=at(3, 10)),
        time=at(3, 10, 5),
    )
    b_placed = placed("ord_B", "shopify", "USD", at(1, 12), ("b1", 1, "40.00"))
    b_held = new_envelope(
        OrderHeld(order_id="ord_B", reason=HoldReason.MANUAL, held_at=at(1, 12, 30)),
        time=at(1, 12, 30),
    )
    b_released = new_envelope(
        OrderReleased(order_id="ord_B", released_at=at(1, 12, 45)), time=at(1, 12, 45)
    )
    b_conf = _confirmed("ord_B", S2, at(1, 13), at(2, 12), ("b1", 1, "30.1234"))
    b_late = new_envelope(
        ShipmentDelayed(
            order_id="ord_B",
            supplier_id=S2,
            reason=DelayReason.NO_TRACKING_BY_DEADLINE,
            severity=Severity.URGENT,
        ),
        time=at(2, 12),
    )
    c_placed = placed("ord_C", "storefront", "EUR", at(2, 9), ("c1", 3, "10.00"))
    c_failed = new_envelope(
        OrderRoutingFailed(order_id="ord_C", line_ids=["c1"], reason=RoutingFailureReason.NO_OFFER),
        time=at(2, 9, 1),
    )
    c_cancel = new_envelope(
        OrderCancelled(order_id="ord_C", reason="customer_request"), time=at(2, 9, 30)
    )
    c_notice = new_envelope(
        NotificationSent(
            order_id="ord_C",
            kind="cancellation",
            channel="email",
            recipient_kind="customer",
            status="sent",
        ),
        time=at(2, 9, 31),
    )
    d_placed = placed("ord_D", "storefront", "USD", at(2, 15), ("d1", 1, "20.00"))
    d_conf = _confirmed("ord_D", S1, at(2, 15, 30), at(3, 15), ("d1", 1, "15.00"))
    d_risk = new_envelope(
        ShipmentDelayed(
            order_id="ord_D", supplier_id=S1, reason=DelayReason.AT_RISK, severity=Severity.NORMAL
        ),
        time=at(3, 9),
    )
    d_disp = new_envelope(
        ShipmentDispatched(
            order_id="ord_D", supplier_id=S1, carrier="dhl", tracking_number="T-D", line_ids=["d1"]
        ),
        time=at(3, 16),
    )
    e_placed = placed("ord_E", "storefront", "USD", at(1, 23, 59), ("e1", 1, "10.00"))
    f_placed = placed("ord_F", "storefront", "USD", at(0, 12), ("f1", 1, "99.00"))
    return [
        a_conf,
        a_disp,
        a_deliv,  # before A is placed
        f_placed,
        a_placed,
        a_placed,  # A twice
        b_placed,
        b_held,
        b_held,  # held twice: counted once
        b_released,
        b_conf,
        b_conf,
        b_late,  # B's confirmation twice
        c_placed,
        c_failed,
        c_cancel,
        c_notice,
        d_placed,
        d_conf,
        d_risk,
        d_disp,
        d_disp,
        e_placed,  # placed on day 1, arrives last
    ]


def _empty(**over):
    item = {
        "orders": 0,
        "gmv": {},
        "aov": {},
        "gross_margin": {},
        "confirmed_orders": 0,
        "confirmation_rate": None,
        "confirmation_latency_s": {"p50": None, "p95": None, "count": 0},
        "supplier_orders_due": 0,
        "shipped_on_time": 0,
        "shipped_late": 0,
        "on_time_rate": None,
        "delayed_supplier_orders": 0,
        "delay_rate": None,
        "delays_by_reason": {},
        "delay_rate_by_reason": {},
        "deliveries": 0,
        "cycle_time_s": {"p50": None, "p95": None, "count": 0},
        "cancellations": 0,
        "cancellations_by_reason": {},
        "routing_failures": 0,
        "routing_failures_by_reason": {},
        "holds": 0,
        "holds_by_reason": {},
        "releases": 0,
        "notices_sent": 0,
        "notices": [],
    }
    item.update(over)
    return item


CYCLE_A = 48 * 3600.0
NOTICE_C = [{"kind": "cancellation", "channel": "email", "status": "sent", "count": 1}]

EXPECTED_BY_DAY = [
    _empty(
        key="2026-03-01",
        orders=3,
        gmv={"USD": "80.00"},
        aov={"USD": "26.67"},
        gross_margin={"USD": "20.8766"},
        confirmed_orders=2,
        confirmation_rate=1.0,
        confirmation_latency_s={"p50": 600.0, "p95": 3600.0, "count": 2},
        holds=1,
        holds_by_reason={"manual": 1},
        releases=1,
    ),
    _empty(
        key="2026-03-02",
        orders=2,
        gmv={"EUR": "30.00", "USD": "20.00"},
        aov={"EUR": "30.00", "USD": "20.00"},
        gross_margin={"USD": "5.00"},
        confirmed_orders=1,
        confirmation_rate=0.5,
        confirmation_latency_s={"p50": 1800.0, "p95": 1800.0, "count": 1},
        supplier_orders_due=2,
        shipped_on_time=1,
        shipped_late=1,
        on_time_rate=0.5,
        delayed_supplier_orders=1,
        delay_rate=0.5,
        delays_by_reason={"no_tracking_by_deadline": 1},
        delay_rate_by_reason={"no_tracking_by_deadline": 0.5},
        cancellations=1,
        cancellations_by_reason={"customer_request": 1},
        routing_failures=1,
        routing_failures_by_reason={"no_offer": 1},
        notices_sent=1,
        notices=NOTICE_C,
    ),
    _empty(
        key="2026-03-03",
        supplier_orders_due=1,
        shipped_late=1,
        on_time_rate=0.0,
        delayed_supplier_orders=1,
        delay_rate=1.0,
        delays_by_reason={"at_risk": 1},
        delay_rate_by_reason={"at_risk": 1.0},
        deliveries=1,
        cycle_time_s={"p50": CYCLE_A, "p95": CYCLE_A, "count": 1},
    ),
]

EXPECTED_TOTAL = _empty(
    key="all",
    orders=5,
    gmv={"EUR": "30.00", "USD": "100.00"},
    aov={"EUR": "30.00", "USD": "25.00"},
    gross_margin={"USD": "25.8766"},
    confirmed_orders=3,
    confirmation_rate=0.75,
    confirmation_latency_s={"p50": 1800.0, "p95": 3600.0, "count": 3},
    supplier_orders_due=3,
    shipped_on_time=1,
    shipped_late=2,
    on_time_rate=0.333333,
    delayed_supplier_orders=2,
    delay_rate=0.666667,
    delays_by_reason={"at_risk": 1, "no_tracking_by_deadline": 1},
    delay_rate_by_reason={"at_risk": 0.333333, "no_tracking_by_deadline": 0.333333},
    deliveries=1,
    cycle_time_s={"p50": CYCLE_A, "p95": CYCLE_A, "count": 1},
    cancellations=1,
    cancellations_by_reason={"customer_request": 1},
    routing_failures=1,
    routing_failures_by_reason={"no_offer": 1},
    holds=1,
    holds_by_reason={"manual": 1},
    releases=1,
    notices_sent=1,
    notices=NOTICE_C,
)

_SUPPLIER_ONLY = {
    "confirmed_orders": None,
    "confirmation_rate": None,
    "cancellations": None,
    "cancellations_by_reason": None,
    "routing_failures": None,
    "routing_failures_by_reason": None,
    "holds": None,
    "holds_by_reason": None,
    "releases": None,
    "notices_sent": None,
    "notices": None,
}

EXPECTED_BY_SUPPLIER = [
    _empty(
        key=S1,
        orders=2,
        gmv={"USD": "50.00"},
        aov={"USD": "25.00"},
        gross_margin={"USD": "16.00"},
        confirmation_latency_s={"p50": 600.0, "p95": 1800.0, "count": 2},
        supplier_orders_due=2,
        shipped_on_time=1,
        shipped_late=1,
        on_time_rate=0.5,
        delayed_supplier_orders=1,
        delay_rate=0.5,
        delays_by_reason={"at_risk": 1},
        delay_rate_by_reason={"at_risk": 0.5},
        deliveries=1,
        cycle_time_s={"p50": CYCLE_A, "p95": CYCLE_A, "count": 1},
        **_SUPPLIER_ONLY,
    ),
    _empty(
        key=S2,
        orders=1,
        gmv={"USD": "40.00"},
        aov={"USD": "40.00"},
        gross_margin={"USD": "9.8766"},
        confirmation_latency_s={"p50": 3600.0, "p95": 3600.0, "count": 1},
        supplier_orders_due=1,
        shipped_late=1,
        on_time_rate=0.0,
        delayed_supplier_orders=1,
        delay_rate=1.0,
        delays_by_reason={"no_tracking_by_deadline": 1},
        delay_rate_by_reason={"no_tracking_by_deadline": 1.0},
        **_SUPPLIER_ONLY,
    ),
]

EXPECTED_BY_CHANNEL = [
    _empty(
        key="shopify",
        orders=1,
        gmv={"USD": "40.00"},
        aov={"USD": "40.00"},
        gross_margin={"USD": "9.8766"},
        confirmed_orders=1,
        confirmation_rate=1.0,
        confirmation_latency_s={"p50": 3600.0, "p95": 3600.0, "count": 1},
        supplier_orders_due=1,
        shipped_late=1,
        on_time_rate=0.0,
        delayed_supplier_orders=1,
        delay_rate=1.0,
        delays_by_reason={"no_tracking_by_deadline": 1},
        delay_rate_by_reason={"no_tracking_by_deadline": 1.0},
        holds=1,
        holds_by_reason={"manual": 1},
        releases=1,
    ),
    _empty(
        key="storefront",
        orders=4,
        gmv={"EUR": "30.00", "USD": "60.00"},
        aov={"EUR": "30.00", "USD": "20.00"},
        gross_margin={"USD": "16.00"},
        confirmed_orders=2,
        confirmation_rate=0.666667,
        confirmation_latency_s={"p50": 600.0, "p95": 1800.0, "count": 2},
        supplier_orders_due=2,
        shipped_on_time=1,
        shipped_late=1,
        on_time_rate=0.5,
        delayed_supplier_orders=1,
        delay_rate=0.5,
        delays_by_reason={"at_risk": 1},
        delay_rate_by_reason={"at_risk": 0.5},
        deliveries=1,
        cycle_time_s={"p50": CYCLE_A, "p95": CYCLE_A, "count": 1},
        cancellations=1,
        cancellations_by_reason={"customer_request": 1},
        routing_failures=1,
        routing_failures_by_reason={"no_offer": 1},
        notices_sent=1,
        notices=NOTICE_C,
    ),
]

DISTINCT_EVENTS = 19
"""Events in `history()` once duplicates are dropped."""
