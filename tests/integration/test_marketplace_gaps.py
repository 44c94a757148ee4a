"""Marketplace orders with gaps, end to end over the broker: no customer or no shipping
address is held `address_invalid` until ops corrects it, then routes; SKU-less lines route
when an offer maps the platform's id and otherwise end `unmapped_sku`. The order and
supplier services served over real HTTP, the supplier simulator in its own process, on
PostgreSQL and SQLite (fixtures built from the platforms' published examples)."""

from __future__ import annotations

import pytest

from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from services.supplier.app import create_app as supplier_app
from services.supplier.settings import SupplierSettings
from shared.infra import free_port
from shared.testing import eventually
from tests.support.data import API_KEY
from tests.support.marketplace import DEFAULT_SECRET as SECRET
from tests.support.marketplace import deliver
from tests.support.services import served
from tests.support.supplier import ADMIN, add_supplier, states

SERVICE = {"Authorization": "Bearer dev-service-token"}


class Stack:
    def __init__(self, order, supplier) -> None:
        self.order, self.supplier = order, supplier


@pytest.fixture
async def stack(database_url, settings_for, simulator):
    order_port, supplier_port = free_port(), free_port()
    order_settings = settings_for(
        OrderSettings,
        await database_url("order"),
        port=order_port,
        shopify_secret=SECRET,
        woocommerce_secret=SECRET,
        writeback_enabled=False,
    )
    supplier_settings = settings_for(
        SupplierSettings,
        await database_url("supplier"),
        port=supplier_port,
        dispatcher_poll_s=0.2,
        supplier_timeout_s=2.0,
        supplier_backoff_s=0.05,
        order_url=f"http://127.0.0.1:{order_port}",
    )
    async with (
        served(order_app, order_settings, order_port) as order,
        served(supplier_app, supplier_settings, supplier_port) as supplier,
    ):
        await order.runtime.bus.wait_connected()
        await supplier.runtime.bus.wait_connected()
        supplier.simulator = simulator
        yield Stack(order, supplier)


async def detail(order, order_id: str) -> dict:
    return (await order.client.get(f"/v1/orders/{order_id}", headers=API_KEY)).json()


async def status_is(order, order_id: str, wanted: str) -> dict | None:
    found = await detail(order, order_id)
    return found if found["status"] == wanted else None


@pytest.mark.parametrize(
    ("platform", "fixture", "note", "fix", "offers"),
    [
        (
            "shopify",
            "shopify/orders_create_no_customer.json",
            "customer.name: missing; shipping_address: missing",
            {"name": "Jordan Lee", "line1": "1600 Glenarm Pl", "city": "Denver",
             "region": "CO", "postal_code": "80202", "country": "US"},
            [("BCB-L-001", "5.00", 50, 24), ("SSWB-750-BLK", "6.00", 50, 24)],
        ),
        (
            "woocommerce",
            "woocommerce/order_created_no_shipping.json",
            "shipping_address: missing",
            {"line1": "Kastanienallee 12", "city": "Berlin", "postal_code": "10435",
             "country": "DE"},
            [("LT-GT-2-NAT", "2.00", 50, 24), ("EB-350-WS", "3.00", 50, 24)],
        ),
    ],
)  # fmt: skip
async def test_an_order_without_customer_or_address_is_held_then_corrected_and_routed(
    stack, platform, fixture, note, fix, offers
):
    currency = "USD" if platform == "shopify" else "EUR"
    supplier_id = await add_supplier(stack.supplier, f"gap{platform[:4]}", offers=[])
    items = [
        {"sku": sku, "supplier_sku": f"S-{sku}", "unit_cost": cost, "currency": currency,
         "stock": stock, "lead_time_hours": lead}
        for sku, cost, stock, lead in offers
    ]  # fmt: skip
    put = await stack.supplier.client.put(
        f"/v1/suppliers/{supplier_id}/offers", json=items, headers=ADMIN
    )
    assert put.status_code == 200, put.text

    held = await deliver(stack.order, platform, fixture)
    assert held["status"] == "on_hold", "accepted and held, not dropped"
    [hold] = held["holds"]
    assert (hold["reason"], hold["note"]) == ("address_invalid", note)
    contact = await stack.order.client.get(f"/v1/orders/{held['id']}/contact", headers=SERVICE)
    assert contact.status_code == 200 and contact.json()["ship_to"]["line1"] is None

    url = f"/v1/orders/{held['id']}/shipping-address"
    if "name" in fix:  # the order has no recipient: an address alone is not enough
        nameless = {k: v for k, v in fix.items() if k != "name"}
        refused = await stack.order.client.put(url, json=nameless, headers=API_KEY)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["field"] == "name"
        assert (await detail(stack.order, held["id"]))["status"] == "on_hold", "nothing changed"
    fixed = await stack.order.client.put(url, json=fix, headers=API_KEY)
    assert fixed.status_code == 200, fixed.text
    assert fixed.json()["holds"] == [] and fixed.json()["status"] == "placed"

    allocated = await states(stack.supplier, held["id"], "accepted")
    assert {a["sku"] for a in allocated} == {sku for sku, *_ in offers}
    await eventually(
        lambda: status_is(stack.order, held["id"], "confirmed"), timeout=30, what="confirmed"
    )
    ship_to = (
        await stack.order.client.get(f"/v1/orders/{held['id']}/contact", headers=SERVICE)
    ).json()["ship_to"]
    assert ship_to["line1"] == fix["line1"] and ship_to["name"]


async def test_skuless_lines_route_by_a_mapped_variant_and_otherwise_need_attention(stack):
    supplier_id = await add_supplier(stack.supplier, "mapper", offers=[])
    offers = [
        {"sku": "BCB-L-001", "supplier_sku": "M-BCB", "unit_cost": "5.00", "currency": "USD",
         "stock": 50, "lead_time_hours": 24, "external_ids": ["shopify:variant:44123456789041"]},
    ]  # fmt: skip
    url = f"/v1/suppliers/{supplier_id}/offers"
    assert (await stack.supplier.client.put(url, json=offers, headers=ADMIN)).status_code == 200

    placed = await deliver(stack.order, "shopify", "shopify/orders_create_skuless.json")
    first, second = placed["lines"]
    assert (first["sku"], second["sku"]) == (
        "unmapped/shopify/variant/44123456789041",
        "unmapped/shopify/variant/44123456821809",
    )

    async def attention():
        found = await detail(stack.order, placed["id"])
        lines = {ln["line_id"]: ln for ln in found["lines"]}
        ready = found["status"] == "needs_attention" and lines[first["line_id"]]["supplier_id"]
        return lines if ready else None

    lines = await eventually(attention, timeout=30, what="the unmapped line needs attention")
    assert lines[second["line_id"]]["routing_failure"] == "unmapped_sku"
    assert lines[first["line_id"]]["supplier_id"] == supplier_id
    [allocation] = await states(stack.supplier, placed["id"], "accepted")
    assert (allocation["line_id"], allocation["sku"]) == (first["line_id"], "BCB-L-001")

    # ops maps the other line's product id to an offer, then routes the line again
    offers.append(
        {"sku": "SSWB-750-BLK", "supplier_sku": "M-SSWB", "unit_cost": "6.00", "currency": "USD",
         "stock": 50, "lead_time_hours": 24, "external_ids": ["shopify:product:8012345711089"]}
    )  # fmt: skip
    assert (await stack.supplier.client.put(url, json=offers, headers=ADMIN)).status_code == 200
    listed = (await stack.supplier.client.get(url, headers=ADMIN)).json()["items"]
    assert [o["external_ids"] for o in listed] == [
        ["shopify:variant:44123456789041"],
        ["shopify:product:8012345711089"],
    ]
    routed = await stack.supplier.client.post(
        f"/v1/orders/{placed['id']}/lines/{second['line_id']}/route", json={}, headers=ADMIN
    )
    assert routed.status_code in (200, 201, 202), routed.text
    await eventually(
        lambda: status_is(stack.order, placed["id"], "confirmed"), timeout=30, what="confirmed"
    )
    skus = {a["sku"] for a in await states(stack.supplier, placed["id"], "accepted")}
    assert skus == {"BCB-L-001", "SSWB-750-BLK"}
