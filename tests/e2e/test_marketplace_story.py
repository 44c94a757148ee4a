"""The marketplace story on the stack `make up` starts: a signed Shopify order from the demo
shop routes, ships and is fulfilled at the shop exactly once with our tracking number; a
WooCommerce order from the demo site ends `completed` with a tracking note; a refund of the
Shopify order through the refunds API and the cancellation of another reach the shop too."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import httpx

from services.order.marketplaces import sign
from shared.infra import free_port
from shared.testing import eventually
from tests.e2e.test_story import add_supplier, system
from tests.support.data import API_KEY

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SHOPIFY_SECRET = "shpss_market_story"
WOO_SECRET = "woo_market_story"
PORTS = ("order", "supplier", "notify", "metrics", "simulator", "marketplace_sim")


def shopify_order(sku: str = "MKT-A") -> tuple[bytes, dict[str, str]]:
    order = json.loads((FIXTURES / "shopify/orders_create.json").read_text())
    order["id"] = 8_000_000_000_000 + uuid.uuid4().int % 1_000_000
    order["line_items"] = [{**order["line_items"][0], "sku": sku, "quantity": 1}]
    body = json.dumps(order).encode()
    return body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": sign(body, SHOPIFY_SECRET),
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Shop-Domain": "maple-and-pine-goods.myshopify.com",
    }


def woo_order() -> tuple[bytes, dict[str, str]]:
    order = json.loads((FIXTURES / "woocommerce/order_created.json").read_text())
    order["id"] = 90_000 + uuid.uuid4().int % 10_000
    order["currency"] = "USD"  # the demo offers are in USD
    for item, sku in zip(order["line_items"], ("MKT-A", "MKT-B"), strict=True):
        item["sku"] = sku
    body = json.dumps(order).encode()
    return body, {
        "Content-Type": "application/json",
        "X-WC-Webhook-Topic": "order.created",
        "X-WC-Webhook-Signature": sign(body, WOO_SECRET),
        "X-WC-Webhook-Delivery-ID": str(uuid.uuid4().int % 10**6),
        "X-WC-Webhook-Source": "https://woo.maple-and-pine.example/",
    }


async def test_marketplace_orders_are_written_back_to_the_demo_shops(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    env |= {
        "DROPSHIP_DATA_DIR": str(tmp_path / "var"),
        "DROPSHIP_EMBEDDED_KAFKA_PORT": str(free_port()),
        "DROPSHIP_SHOPIFY_SECRET": SHOPIFY_SECRET,
        "DROPSHIP_WOOCOMMERCE_SECRET": WOO_SECRET,
        "DROPSHIP_WRITEBACK_POLL_S": "0.2",
    }
    for name in PORTS:
        env[f"DROPSHIP_{name.upper()}_PORT"] = str(free_port())
    market = f"http://127.0.0.1:{env['DROPSHIP_MARKETPLACE_SIM_PORT']}"
    async with system(env, tmp_path / "up.log") as urls, httpx.AsyncClient(timeout=10) as c:
        shops = await eventually(
            lambda: _shops(c, urls["order"]), timeout=60, what="demo shops registered"
        )
        assert sorted(s["platform"] for s in shops) == ["shopify", "woocommerce"]
        assert SHOPIFY_SECRET not in json.dumps(shops)
        await add_supplier(c, urls, "mkt-fast", 1, {"MKT-A": "3.00", "MKT-B": "4.00"}, 48)
        sim = urls["simulator"]
        fast = {"ship_after_s": 0.2, "deliver_after_s": None}
        assert (await c.put(f"{sim}/_control/mkt-fast", json=fast)).status_code == 200

        body, headers = shopify_order()
        placed = await c.post(urls["order"] + "/v1/webhooks/shopify", content=body, headers=headers)
        assert placed.status_code == 200, placed.text
        external = str(json.loads(body)["id"])
        body, headers = woo_order()
        woo = await c.post(
            urls["order"] + "/v1/webhooks/woocommerce", content=body, headers=headers
        )
        assert woo.status_code == 200, woo.text
        woo_id = str(json.loads(body)["id"])

        async def written_back() -> list[dict] | None:
            items = (await c.get(f"{market}/_control/calls")).json()["items"]
            ops = {(i["operation"], i["order_external_id"]) for i in items}
            done = ("fulfillmentCreate", external) in ops and ("orders.update", woo_id) in ops
            return items if done else None

        calls = await eventually(written_back, timeout=90, what="write-backs at the shops")
        order = await c.get(
            f"{urls['order']}/v1/orders/{placed.json()['order_id']}", headers=API_KEY
        )
        [shipment] = order.json()["shipments"]
        fulfilments = [c for c in calls if c["operation"] == "fulfillmentCreate"]
        assert [(f["shop"], f["order_external_id"], f["tracking_number"]) for f in fulfilments] == [
            ("maple-and-pine-goods", external, shipment["tracking_number"])
        ]
        woo_calls = [
            (c["operation"], c.get("status")) for c in calls if c["shop"] == "maple-and-pine-woo"
        ]
        assert woo_calls == [("notes.create", None), ("orders.update", "completed")]
        state = (await c.get(f"{market}/_control/shops/maple-and-pine-woo")).json()
        assert state["orders"][woo_id]["status"] == "completed"
        assert "tracking number" in state["orders"][woo_id]["notes"][0]["note"]

        # a partial refund of the shipped order through the refunds API, retried by the
        # client under its Idempotency-Key, reaches the shop once
        refunds = f"{urls['order']}/v1/orders/{placed.json()['order_id']}/refunds"
        ask = {"amount": "7.25", "reason": "changed_mind"}
        key = {**API_KEY, "Idempotency-Key": f"mkt-story-{uuid.uuid4().hex}"}
        refund = await c.post(refunds, json=ask, headers=key)
        assert refund.status_code == 201, refund.text
        retry = await c.post(refunds, json=ask, headers=key)
        assert retry.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"
        assert retry.json() == refund.json()
        refund_id = refund.json()["id"]
        assert (refund.json()["channel"], refund.json()["cost_bearer"]) == ("shopify", "merchant")
        # and another order, which no supplier can take, is cancelled here
        body, headers = shopify_order("MKT-NOBODY")
        other = await c.post(urls["order"] + "/v1/webhooks/shopify", content=body, headers=headers)
        other_external = str(json.loads(body)["id"])
        cancel = await c.post(
            f"{urls['order']}/v1/orders/{other.json()['order_id']}/cancel",
            json={"reason": "customer asked"},
            headers=API_KEY,
        )
        assert cancel.status_code == 200, cancel.text

        async def told() -> list[tuple[str, str]] | None:
            items = (await c.get(f"{market}/_control/calls")).json()["items"]
            ops = [(i["operation"], i["order_external_id"]) for i in items]
            wanted = [("refundCreate", external), ("orderCancel", other_external)]
            return ops if all(w in ops for w in wanted) else None

        ops = await eventually(told, timeout=90, what="refund and cancellation at the shop")
        assert ops.count(("refundCreate", external)) == 1
        state = (await c.get(f"{market}/_control/shops/maple-and-pine-goods")).json()
        [note] = [r["note"] for r in state["orders"][external]["refunds"]]
        assert note.startswith("Refund of 7.25 USD (changed_mind)") and refund_id in note
        # the order keeps what was refunded; the rest of what was paid may still be
        order = (await c.get(refunds.removesuffix("/refunds"), headers=API_KEY)).json()
        assert (order["total"], order["refunded_total"]) == ("19.99", "7.25")
        over = await c.post(
            refunds, json={"amount": "12.75", "reason": "changed_mind"}, headers=API_KEY
        )
        assert over.status_code == 409 and over.json()["error"]["code"] == "refund_exceeds_paid"
        [listed] = (await c.get(refunds, headers=API_KEY)).json()["items"]
        assert listed["id"] == refund_id


async def _shops(c: httpx.AsyncClient, order_url: str) -> list[dict] | None:
    response = await c.get(order_url + "/v1/shops", headers=API_KEY)
    items = response.json()["items"] if response.status_code == 200 else []
    return items if len(items) == 2 else None
