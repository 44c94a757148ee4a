"""Routing a batch of placed orders decides exactly as routing them one by one, in order."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.supplier.consumers import CONSUMERS, apply_batch
from services.supplier.domain import Offer, SupplierInfo, Track, plan, plan_in_turn
from services.supplier.domain.routing_policy import Line, Weights
from shared.events import (
    Envelope,
    EventData,
    OrderCancelled,
    OrderHeld,
    OrderPlaced,
    PlacedLine,
    new_envelope,
)
from tests.unit.supplier_fakes import FakeUnitOfWork, entry

SUPPLIERS = ("sup_a", "sup_b", "sup_c")
SKUS = ("MUG", "TEA", "CUP")
T0 = datetime(2026, 12, 1, tzinfo=UTC)

offers_st = st.lists(
    st.tuples(
        st.sampled_from(SUPPLIERS),
        st.sampled_from(SKUS),
        st.integers(1, 9),  # unit cost
        st.integers(0, 4),  # stock: often too little
        st.sampled_from(["USD", "USD", "USD", "EUR"]),
        st.sampled_from([24.0, 48.0, 200.0]),
        st.booleans(),  # maps the platform id shop:<sku>
    ),
    max_size=8,
    unique_by=lambda o: (o[0], o[1]),
)
line_st = st.tuples(
    st.sampled_from((*SKUS, "NONE", "")),  # "": SKU-less, by platform id
    st.integers(1, 3),
    st.integers(2, 12),  # unit price: some below cost (negative margin)
)
order_st = st.tuples(
    st.lists(line_st, min_size=1, max_size=3), st.sampled_from(["USD", "USD", "EUR"])
)
world_st = st.fixed_dictionaries(
    {
        "offers": offers_st,
        "priorities": st.lists(st.integers(1, 10), min_size=3, max_size=3),
        "inactive": st.sets(st.sampled_from(SUPPLIERS), max_size=1),
        "orders": st.lists(order_st, min_size=1, max_size=7),
        "repeat": st.lists(st.integers(0, 6), max_size=2),  # redelivered order-placed
        "held": st.sets(st.integers(0, 6), max_size=2),  # held before placed
        "cancelled": st.sets(st.integers(0, 6), max_size=2),  # cancelled (before or after)
        "waiting": st.sets(st.integers(0, 6), max_size=2),  # lines waiting from before
    }
)


def make_world(w: dict[str, Any]) -> FakeUnitOfWork:
    uow = FakeUnitOfWork()
    for supplier_id, priority in zip(SUPPLIERS, w["priorities"], strict=True):
        made = entry(supplier_id, priority=priority)
        uow.suppliers.entries_by_id[supplier_id] = replace(
            made, active=supplier_id not in w["inactive"]
        )
    for supplier_id, sku, cost, stock, currency, lead, maps in w["offers"]:
        uow.offers.rows[(supplier_id, sku)] = Offer(
            supplier_id,
            sku,
            f"{supplier_id}-{sku}",
            Decimal(cost),
            currency,
            stock,
            lead,
            (f"shop:{sku}",) if maps else None,
        )
    return uow


def stream(w: dict[str, Any]) -> list[tuple[Envelope, EventData]]:
    """The events in offset order: holds first, placed orders (repeats and cancellations
    in between), and a cancellation of some routed order at the end."""
    out: list[EventData] = [
        OrderHeld(order_id=f"ord_{i}", reason="manual", held_at=T0) for i in sorted(w["held"])
    ]
    for i, (lines, currency) in enumerate(w["orders"]):
        placed = OrderPlaced(
            order_id=f"ord_{i}",
            channel="storefront",
            currency=currency,
            lines=[
                PlacedLine(
                    line_id=f"ord_{i}-{n}",
                    sku=sku or f"unmapped/{n}",
                    quantity=q,
                    unit_price=Decimal(price),
                    external_ids=[f"shop:{SKUS[n % 3]}"] if not sku else None,
                )
                for n, (sku, q, price) in enumerate(lines)
            ],
            shipping_country="US",
            shipping_postal_code="10001",
            placed_at=T0,
        )
        if i in w["cancelled"] and i % 2:
            out.append(OrderCancelled(order_id=placed.order_id, reason="before"))
        out.append(placed)
        out += [placed for r in w["repeat"] if r == i]
    out += [OrderCancelled(order_id=f"ord_{i}", reason="after") for i in sorted(w["cancelled"])]
    return [(new_envelope(e), e) for e in out]


def seed_waiting(uow: FakeUnitOfWork, w: dict[str, Any]) -> None:
    for i in w["waiting"]:
        for n in range(3):
            uow.waiting.rows[(f"ord_{i}", f"ord_{i}-{n}")] = ("server_error", T0, None, 0)


def state(uow: FakeUnitOfWork) -> dict[str, Any]:
    """Everything routing leaves behind, supplier order ids and clock times aside."""
    return {
        "supplier_orders": [
            (so.order_id, so.supplier_id, so.state, so.lines, so.attempts)
            for so in uow.supplier_orders.rows.values()
        ],
        "stock": {k: o.stock for k, o in uow.offers.rows.items()},
        "events": uow.committed,
        "handed_off": [
            (o.order_id, o.supplier_id, o.lines, o.ship_country, o.ship_postal_code)
            for o in uow.handed_off
        ],
        "requests": {
            k: (r.lines, r.cancelled_at is not None) for k, r in uow.routing_requests.rows.items()
        },
        "holds": {k: sorted(v[2]) for k, v in uow.holds.rows.items()},
        "waiting": set(uow.waiting.rows),
    }


async def one_by_one(w: dict[str, Any]) -> dict[str, Any]:
    uow = make_world(w)
    seed_waiting(uow, w)
    for envelope, data in stream(w):
        async with uow:
            await CONSUMERS[envelope.type].apply(envelope, data, uow)  # type: ignore[arg-type]
            await uow.commit()
    return state(uow)


async def batched(w: dict[str, Any]) -> dict[str, Any]:
    uow = make_world(w)
    seed_waiting(uow, w)
    async with uow:
        await apply_batch(stream(w), uow)  # type: ignore[arg-type]
        await uow.commit()
    return state(uow)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world_st)
def test_a_batch_routes_exactly_as_one_by_one(w: dict[str, Any]) -> None:
    assert asyncio.run(batched(w)) == asyncio.run(one_by_one(w))


def test_the_batch_sees_the_stock_the_orders_before_took() -> None:
    """Three orders for 2 each, 5 in stock at the cheaper supplier: the third goes to the
    dearer one, as it would one by one."""
    offers = [
        Offer("cheap", "MUG", "c-MUG", Decimal("3"), "USD", 5, 24.0),
        Offer("dear", "MUG", "d-MUG", Decimal("5"), "USD", 9, 24.0),
    ]
    suppliers = {s: SupplierInfo(s, True, 5, Track()) for s in ("cheap", "dear")}
    orders = [([Line(f"l{i}", "MUG", 2, Decimal("12"))], "USD") for i in range(3)]
    plans = plan_in_turn(orders, offers, suppliers, Weights())
    assert [list(p.by_supplier) for p in plans] == [["cheap"], ["cheap"], ["dear"]]
    stock = {"cheap": 5, "dear": 9}
    for lines, currency in orders:  # one by one, against the stock left
        live = [replace(o, stock=stock[o.supplier_id]) for o in offers]
        [(winner, [pick])] = plan(lines, live, suppliers, currency, Weights()).by_supplier.items()
        stock[winner] -= pick.line.quantity
    assert stock == {"cheap": 1, "dear": 7}


def test_a_stream_of_no_placed_orders_still_reaches_every_handler() -> None:
    w = {"offers": [], "priorities": [1, 1, 1], "inactive": set(), "orders": [],
         "repeat": [], "held": {0}, "cancelled": {0}, "waiting": {0}}  # fmt: skip
    got = asyncio.run(batched(w))
    assert got["holds"] == {"ord_0": []} and got["waiting"] == set()
    assert got == asyncio.run(one_by_one(w))
