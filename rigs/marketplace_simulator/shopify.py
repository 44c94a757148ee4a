"""The Shopify Admin GraphQL subset we call: `order { fulfillmentOrders refunds transactions }`,
`fulfillmentCreate`, `orderCancel`, `refundCreate`. Operations are told apart by their root
field; variables carry the input."""

from __future__ import annotations

import re
from typing import Any

from rigs.marketplace_simulator.state import Call, SimShop

_ROOT = re.compile(r"{\s*(\w+)\s*\(")
_ORDER_GID = re.compile(r"^gid://shopify/Order/(\d+)$")


def _order_id(gid: object) -> str | None:
    match = _ORDER_GID.match(str(gid))
    return match.group(1) if match else None


def execute(shop: SimShop, query: str, variables: dict[str, Any]) -> tuple[Any, Call | None]:
    """(the `data` answer, the call to record or None for a read)."""
    match = _ROOT.search(query)
    root = match.group(1) if match else ""
    if root == "order":
        order_id = _order_id(variables.get("id"))
        if order_id is None:
            return {"order": None}, None
        order = shop.shopify_order(order_id)
        return {
            "order": {
                "id": variables["id"],
                "fulfillments": order["fulfillments"],
                "refunds": order["refunds"],
                "transactions": order["transactions"],
                "fulfillmentOrders": {
                    "nodes": [
                        {**fo, "lineItems": {"nodes": fo["lineItems"]}}
                        for fo in order["fulfillment_orders"]
                    ]
                },
            }
        }, None
    if root == "fulfillmentCreate":
        return _fulfil(shop, variables.get("fulfillment") or {})
    if root == "refundCreate":
        return _refund(shop, variables.get("input") or {})
    if root == "orderCancel":
        order_id = _order_id(variables.get("orderId"))
        if order_id is None:
            return {
                "orderCancel": {
                    "job": None,
                    "orderCancelUserErrors": [
                        {
                            "field": ["orderId"],
                            "message": "Order does not exist",
                            "code": "NOT_FOUND",
                        }
                    ],
                }
            }, None
        order = shop.shopify_order(order_id)
        if order["cancelled"]:
            errors = [
                {
                    "field": ["orderId"],
                    "message": "Order has already been cancelled",
                    "code": "ORDER_ALREADY_CANCELLED",
                }
            ]
            return {"orderCancel": {"job": None, "orderCancelUserErrors": errors}}, None
        order["cancelled"] = True
        call = Call("shopify", shop.name, "orderCancel", order_id)
        return {
            "orderCancel": {
                "job": {"id": f"gid://shopify/Job/{order_id}"},
                "orderCancelUserErrors": [],
            }
        }, call
    return {}, None


def _fulfil(shop: SimShop, fulfillment: dict[str, Any]) -> tuple[Any, Call | None]:
    def user_error(message: str) -> tuple[Any, None]:
        return {
            "fulfillmentCreate": {
                "fulfillment": None,
                "userErrors": [{"field": ["fulfillment"], "message": message}],
            }
        }, None

    groups = fulfillment.get("lineItemsByFulfillmentOrder") or []
    if not groups:
        return user_error("lineItemsByFulfillmentOrder is required")
    fo_id = str(groups[0].get("fulfillmentOrderId", ""))
    order_id = fo_id.rsplit("/", 1)[-1]
    order = shop.orders.get(order_id)
    fo = next((f for f in order["fulfillment_orders"] if f["id"] == fo_id), None) if order else None
    if order is None or fo is None:
        return user_error("Fulfillment order does not exist")
    if fo["status"] != "OPEN":
        return user_error("Fulfillment order is not in a fulfillable state")
    wanted = {i["id"]: int(i["quantity"]) for i in groups[0].get("fulfillmentOrderLineItems") or []}
    for item in fo["lineItems"]:
        # the named lines only; no lines named means the whole fulfilment order
        take = wanted.get(item["id"], 0) if wanted else item["remainingQuantity"]
        item["remainingQuantity"] -= min(take, item["remainingQuantity"])
    if all(i["remainingQuantity"] == 0 for i in fo["lineItems"]):
        fo["status"] = "CLOSED"
    tracking = fulfillment.get("trackingInfo") or {}
    number = tracking.get("number")
    fulfillment_id = f"gid://shopify/Fulfillment/{order_id}{len(order['fulfillments']) + 1}"
    order["fulfillments"].append(
        {
            "id": fulfillment_id,
            "trackingInfo": [
                {"number": number, "company": tracking.get("company"), "url": tracking.get("url")}
            ],
        }
    )
    call = Call("shopify", shop.name, "fulfillmentCreate", order_id, number)
    return {
        "fulfillmentCreate": {
            "fulfillment": {"id": fulfillment_id, "status": "SUCCESS"},
            "userErrors": [],
        }
    }, call


def _refund(shop: SimShop, refund: dict[str, Any]) -> tuple[Any, Call | None]:
    """A refund of the order: note-only (records it), or with REFUND transactions whose
    parent must be one of the order's successful payments (the gateway pays it back)."""
    order_id = _order_id(refund.get("orderId"))
    if order_id is None:
        errors = [{"field": ["orderId"], "message": "Order does not exist"}]
        return {"refundCreate": {"refund": None, "userErrors": errors}}, None
    order = shop.shopify_order(order_id)
    payments = {t["id"] for t in order["transactions"] if t["status"] == "SUCCESS"}
    amount = None
    for t in refund.get("transactions") or []:
        if t.get("kind") != "REFUND" or t.get("parentId") not in payments:
            errors = [{"field": ["transactions"], "message": "Parent transaction is invalid"}]
            return {"refundCreate": {"refund": None, "userErrors": errors}}, None
        amount = str(t.get("amount"))
    refund_id = f"gid://shopify/Refund/{order_id}{len(order['refunds']) + 1}"
    order["refunds"].append(
        {
            "id": refund_id,
            "note": refund.get("note"),
            "amount": amount,
            "notify": refund.get("notify"),
        }
    )
    call = Call("shopify", shop.name, "refundCreate", order_id, amount=amount)
    return {"refundCreate": {"refund": {"id": refund_id}, "userErrors": []}}, call
