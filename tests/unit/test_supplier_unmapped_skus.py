"""SKU-less marketplace lines: an offer mapping the platform's variant or product id routes
them under its SKU; without one the line fails `unmapped_sku` (not `no_offer`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from services.supplier.domain import State
from services.supplier.handlers import events
from shared.events import (
    OrderPlaced,
    OrderRoutingFailed,
    PlacedLine,
    RoutingFailureReason,
    new_envelope,
)
from tests.unit.test_supplier_handlers import CHEAP, world


async def place_skuless(uow, *lines: tuple[str, list[str] | None]) -> str:
    order_id = f"ord_{len(uow.routing_requests.rows) + 1}"
    data = OrderPlaced(
        order_id=order_id,
        channel="shopify",
        currency="USD",
        lines=[
            PlacedLine(line_id=f"{order_id}-{i}", sku=sku, quantity=1, unit_price=Decimal("12.50"),
                       external_ids=ids)
            for i, (sku, ids) in enumerate(lines, start=1)
        ],
        shipping_country="US",
        shipping_postal_code="10001",
        placed_at=datetime.now(UTC),
    )  # fmt: skip
    async with uow:
        await events.on_order_placed(new_envelope(data), data, uow)
        await uow.commit()
    return order_id


async def test_an_unmapped_skuless_line_fails_unmapped_sku_and_a_sku_line_no_offer() -> None:
    uow = world()
    order_id = await place_skuless(
        uow,
        ("unmapped/shopify/variant/111", ["shopify:variant:111", "shopify:product:222"]),
        ("TEA", None),
    )
    failed = {e.reason: e.line_ids for e in uow.of_type(OrderRoutingFailed)}
    assert failed == {
        RoutingFailureReason.UNMAPPED_SKU: [f"{order_id}-1"],
        RoutingFailureReason.NO_OFFER: [f"{order_id}-2"],
    }


async def test_an_offer_mapping_the_product_id_routes_the_line_under_its_sku() -> None:
    uow = world(backup=False)
    mug = uow.offers.rows[(CHEAP, "MUG")]
    uow.offers.rows[(CHEAP, "MUG")] = replace(mug, external_ids=("shopify:product:222",))
    order_id = await place_skuless(
        uow, ("unmapped/shopify/variant/111", ["shopify:variant:111", "shopify:product:222"])
    )
    assert not uow.of_type(OrderRoutingFailed)
    [so] = uow.supplier_orders.in_state(order_id, State.SENDING)
    assert [(a.sku, a.supplier_sku) for a in so.lines] == [("MUG", f"{CHEAP}-MUG")]
    assert uow.offers.stock(CHEAP, "MUG") == 9
