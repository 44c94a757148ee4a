"""The marketplace simulator keeps its shops under the data folder: a restart forgets nothing."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.infra import free_port
from tests.support.marketplace import MARKETPLACE_APP
from tests.support.services import ServiceProcess

GRAPHQL = "/shop-keep/admin/api/2024-10/graphql.json"
TOKEN = {"X-Shopify-Access-Token": "shpat-keep"}
WOO = {"Authorization": "Basic " + base64.b64encode(b"ck_keep:cs_keep").decode()}
ORDER_GID = "gid://shopify/Order/4242"
READ = "query Order($id: ID!) { order(id: $id) { id fulfillments refunds } }"
FULFIL = "mutation F($fulfillment: FulfillmentInput!) { fulfillmentCreate(fulfillment: $f) }"
REFUND = "mutation R($input: RefundInput!) { refundCreate(input: $input) { refund { id } } }"
CANCEL = "mutation C($orderId: ID!) { orderCancel(orderId: $orderId) { job { id } } }"


async def _gql(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Any:
    response = await client.post(
        GRAPHQL, json={"query": query, "variables": variables}, headers=TOKEN
    )
    assert response.status_code == 200, response.text
    return response.json()["data"]


def _fulfilment(number: str) -> dict[str, Any]:
    lines = [{"fulfillmentOrderId": "gid://shopify/FulfillmentOrder/4242"}]
    return {
        "fulfillment": {"lineItemsByFulfillmentOrder": lines, "trackingInfo": {"number": number}}
    }


def _refund() -> dict[str, Any]:
    sale = "gid://shopify/OrderTransaction/42421"
    tx = [{"kind": "REFUND", "parentId": sale, "amount": "12.50", "gateway": "shopify_payments"}]
    return {"input": {"orderId": ORDER_GID, "note": "return", "transactions": tx}}


@pytest.mark.parametrize("stop", ["kill", "terminate"])
async def test_a_restarted_marketplace_simulator_knows_its_shops(tmp_path: Path, stop: str) -> None:
    env = {"DROPSHIP_DATA_DIR": str(tmp_path / "var")}
    sim = ServiceProcess("marketplace", env, free_port(), tmp_path / "m.log", app=MARKETPLACE_APP)
    sim.start()
    try:
        async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
            shop = {"platform": "shopify", "access_token": "shpat-keep"}
            await client.put("/_control/shops/shop-keep", json=shop)
            woo = {
                "platform": "woocommerce",
                "consumer_key": "ck_keep",
                "consumer_secret": "cs_keep",
            }
            await client.put("/_control/shops/woo-keep", json=woo | {"failing_calls": 2})
            await _gql(client, READ, {"id": ORDER_GID})
            done = await _gql(client, FULFIL, _fulfilment("1Z999"))
            assert done["fulfillmentCreate"]["userErrors"] == []
            assert (await _gql(client, REFUND, _refund()))["refundCreate"]["userErrors"] == []
            cancel = await _gql(client, CANCEL, {"orderId": ORDER_GID})
            assert cancel["orderCancel"]["orderCancelUserErrors"] == []
            woo_refund = {"amount": "5.00", "reason": "broken"}
            url = "/woo-keep/wp-json/wc/v3/orders/77"
            assert (await client.get(url, headers=WOO)).status_code == 500  # steered: 1 left
            note = {"note": "Shipped with tracking number TRK77"}
            assert (await client.post(f"{url}/notes", json=note, headers=WOO)).status_code == 500
            assert (
                await client.post(f"{url}/refunds", json=woo_refund, headers=WOO)
            ).status_code == 201
            assert (await client.post(f"{url}/notes", json=note, headers=WOO)).status_code == 201
            before = (await client.get("/_control/calls")).json()["items"]
            shops = {
                n: (await client.get(f"/_control/shops/{n}")).json()
                for n in ("shop-keep", "woo-keep")
            }
        assert [c["operation"] for c in before] == [
            "fulfillmentCreate",
            "refundCreate",
            "orderCancel",
            "refunds.create",
            "notes.create",
        ]
        sim.kill() if stop == "kill" else sim.stop()

        sim.start()  # same data folder
        async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
            assert (await client.get("/_control/calls")).json()["items"] == before
            for name, kept in shops.items():
                assert (await client.get(f"/_control/shops/{name}")).json() == kept
            order = (await _gql(client, READ, {"id": ORDER_GID}))["order"]
            assert order["fulfillments"][0]["trackingInfo"][0]["number"] == "1Z999"
            assert [r["amount"] for r in order["refunds"]] == ["12.50"]
            # what the platform's write-back checks before writing again is still there
            again = await _gql(client, FULFIL, _fulfilment("1Z999"))
            assert again["fulfillmentCreate"]["userErrors"][0]["message"].endswith("state")
            cancel = await _gql(client, CANCEL, {"orderId": ORDER_GID})
            errors = cancel["orderCancel"]["orderCancelUserErrors"]
            assert errors[0]["code"] == "ORDER_ALREADY_CANCELLED"
            refunds = (await client.get(f"{url}/refunds", headers=WOO)).json()
            assert [r["amount"] for r in refunds] == ["5.00"]
            notes = (await client.get(f"{url}/notes", headers=WOO)).json()
            assert [n["note"] for n in notes] == [note["note"]]
            assert len((await client.get("/_control/calls")).json()["items"]) == len(before)
    finally:
        sim.stop()
