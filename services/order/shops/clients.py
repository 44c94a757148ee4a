"""Outbound adapters: Shopify Admin GraphQL and WooCommerce REST, one method per write-back.

Errors form one small tree: `WritebackError` is the root; `RetryLater` is transient
(throttled, 429, 5xx, network) and may carry the platform's own wait (Shopify's cost
throttle, `Retry-After`); `Rejected` is permanent (bad credentials, unknown order, user
errors) and is not retried. Each write-back first reads what the shop already has, so a
retry after a crash that hid a success finds its own tracking number and stops there:
exactly one fulfilment per shipment.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import httpx

from services.order.shops.domain import Shop, WritebackTask

SHOPIFY_API_VERSION = "2024-10"


class WritebackError(Exception):
    """Root: a write-back did not happen."""


class RetryLater(WritebackError):
    def __init__(self, reason: str, wait_s: float | None = None) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


class Rejected(WritebackError):
    """The platform refused the request for a reason a retry cannot fix."""


FULFILLMENT_ORDERS = """
query FulfillmentOrders($id: ID!) {
  order(id: $id) {
    id
    fulfillments(first: 50) { trackingInfo(first: 10) { number } }
    fulfillmentOrders(first: 20) {
      nodes { id status lineItems(first: 100) { nodes { id sku remainingQuantity } } }
    }
  }
}
"""

FULFILLMENT_CREATE = """
mutation FulfillmentCreate($fulfillment: FulfillmentInput!, $message: String) {
  fulfillmentCreate(fulfillment: $fulfillment, message: $message) {
    fulfillment { id status }
    userErrors { field message }
  }
}
"""

ORDER_CANCEL = """
mutation OrderCancel($orderId: ID!, $notifyCustomer: Boolean, $staffNote: String) {
  orderCancel(orderId: $orderId, reason: OTHER, refund: false, restock: true,
              notifyCustomer: $notifyCustomer, staffNote: $staffNote) {
    job { id }
    orderCancelUserErrors { field message code }
  }
}
"""


ORDER_REFUNDS = """
query OrderRefunds($id: ID!) {
  order(id: $id) {
    id
    refunds(first: 100) { id note }
    transactions(first: 50) { id kind status gateway }
  }
}
"""

REFUND_CREATE = """
mutation RefundCreate($input: RefundInput!) {
  refundCreate(input: $input) {
    refund { id }
    userErrors { field message }
  }
}
"""


def refund_marker(task: WritebackTask) -> str:
    """What the shop's refund note carries so a retry finds the refund it already made."""
    return f"[dropship {task.payload['refund_id']}]"


def refund_note(task: WritebackTask) -> str:
    p = task.payload
    return f"Refund of {p['amount']} {p['currency']} ({p['reason']}) {refund_marker(task)}"


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


def _check_status(response: httpx.Response, what: str) -> None:
    if response.status_code == 429:
        raise RetryLater(f"{what}: rate limited (429)", _retry_after(response))
    if response.status_code >= 500:
        raise RetryLater(f"{what}: HTTP {response.status_code}", _retry_after(response))
    if response.status_code >= 400:
        raise Rejected(f"{what}: HTTP {response.status_code}")


async def _send(client: httpx.AsyncClient, what: str, **request: Any) -> httpx.Response:
    try:
        return await client.request(**request)
    except httpx.HTTPError as exc:
        raise RetryLater(f"{what}: {type(exc).__name__}") from exc


class ShopifyClient:
    """The fulfilment and cancellation calls of the Shopify Admin GraphQL API."""

    def __init__(self, http: httpx.AsyncClient, shop: Shop, *, refund_money: bool = False) -> None:
        self.http = http
        self.shop = shop
        self.refund_money = refund_money
        self.url = f"{shop.api_base_url.rstrip('/')}/admin/api/{SHOPIFY_API_VERSION}/graphql.json"

    async def execute(self, query: str, variables: dict[str, Any], what: str) -> dict[str, Any]:
        response = await _send(
            self.http,
            what,
            method="POST",
            url=self.url,
            json={"query": query, "variables": variables},
            headers={"X-Shopify-Access-Token": self.shop.credentials.access_token or ""},
        )
        _check_status(response, what)
        body = json.loads(response.content, parse_float=Decimal)
        errors = body.get("errors") or []
        if any((e.get("extensions") or {}).get("code") == "THROTTLED" for e in errors):
            raise RetryLater(f"{what}: throttled", self.throttle_wait(body))
        if errors:
            raise Rejected(f"{what}: {errors[0].get('message', 'GraphQL error')}")
        data: dict[str, Any] = body.get("data") or {}
        return data

    @staticmethod
    def throttle_wait(body: dict[str, Any]) -> float | None:
        """Seconds until the leaky bucket holds the cost asked for (Shopify's documented rule)."""
        cost = (body.get("extensions") or {}).get("cost") or {}
        status = cost.get("throttleStatus") or {}
        try:
            needed = float(cost.get("requestedQueryCost", 0)) - float(status["currentlyAvailable"])
            rate = float(status["restoreRate"])
        except (KeyError, TypeError, ValueError):
            return None
        return math.ceil(max(needed, 0) / rate * 10) / 10 if rate > 0 else None

    async def fulfil(self, task: WritebackTask) -> str:
        gid = f"gid://shopify/Order/{task.external_id}"
        data = await self.execute(FULFILLMENT_ORDERS, {"id": gid}, "fulfillmentOrders")
        order = data.get("order")
        if not order:
            raise Rejected(f"Shopify order {task.external_id} not found")
        number = task.payload["tracking_number"]
        for fulfillment in order.get("fulfillments") or []:
            if any(t.get("number") == number for t in fulfillment.get("trackingInfo") or []):
                return "already fulfilled"  # an earlier attempt succeeded before a crash
        items = _pick(order["fulfillmentOrders"]["nodes"], task.payload.get("skus") or {})
        if not items:
            return "nothing left to fulfil"
        fulfillment = {
            "lineItemsByFulfillmentOrder": items,
            "notifyCustomer": self.shop.notify_customer,
            "trackingInfo": {
                "company": task.payload["carrier"],
                "number": number,
                **(
                    {"url": task.payload["tracking_url"]}
                    if task.payload.get("tracking_url")
                    else {}
                ),
            },
        }
        result = (
            await self.execute(
                FULFILLMENT_CREATE, {"fulfillment": fulfillment}, "fulfillmentCreate"
            )
        ).get("fulfillmentCreate") or {}
        if result.get("userErrors"):
            raise Rejected(f"fulfillmentCreate: {result['userErrors'][0].get('message')}")
        return "fulfilled"

    async def cancel(self, task: WritebackTask) -> str:
        variables = {
            "orderId": f"gid://shopify/Order/{task.external_id}",
            "notifyCustomer": self.shop.notify_customer,
            "staffNote": task.payload.get("reason", "")[:255],
        }
        result = (await self.execute(ORDER_CANCEL, variables, "orderCancel")).get(
            "orderCancel"
        ) or {}
        errors = result.get("orderCancelUserErrors") or []
        if errors:
            if any(e.get("code") == "ORDER_ALREADY_CANCELLED" for e in errors):
                return "already cancelled"
            raise Rejected(f"orderCancel: {errors[0].get('message')}")
        return "cancelled"

    async def refund(self, task: WritebackTask) -> str:
        """`refundCreate` once per refund id: a note-only refund that records it, or (with
        `refund_money`) a REFUND transaction against the order's captured payment."""
        gid = f"gid://shopify/Order/{task.external_id}"
        order = (await self.execute(ORDER_REFUNDS, {"id": gid}, "order refunds")).get("order")
        if not order:
            raise Rejected(f"Shopify order {task.external_id} not found")
        if any(refund_marker(task) in (r.get("note") or "") for r in order.get("refunds") or []):
            return "already refunded"  # an earlier attempt succeeded before a crash
        refund: dict[str, Any] = {
            "orderId": gid,
            "note": refund_note(task),
            "notify": self.shop.notify_customer,
        }
        if self.refund_money:
            paid = [
                t
                for t in order.get("transactions") or []
                if t.get("kind") in ("SALE", "CAPTURE") and t.get("status") == "SUCCESS"
            ]
            if not paid:
                raise Rejected("refundCreate: the order has no captured payment to refund")
            refund["transactions"] = [
                {
                    "orderId": gid,
                    "parentId": paid[0]["id"],
                    "gateway": paid[0]["gateway"],
                    "kind": "REFUND",
                    "amount": task.payload["amount"],
                }
            ]
        result = (await self.execute(REFUND_CREATE, {"input": refund}, "refundCreate")).get(
            "refundCreate"
        ) or {}
        if result.get("userErrors"):
            raise Rejected(f"refundCreate: {result['userErrors'][0].get('message')}")
        return "refunded" if self.refund_money else "refund recorded"


def _pick(fulfillment_orders: list[dict[str, Any]], skus: dict[str, int]) -> list[dict[str, Any]]:
    """The open fulfilment-order lines of the shipped SKUs; every open line when none match."""
    open_orders = [fo for fo in fulfillment_orders if fo.get("status") in ("OPEN", "IN_PROGRESS")]
    wanted = dict(skus)
    picked: list[dict[str, Any]] = []
    for fo in open_orders:
        lines = []
        for item in fo["lineItems"]["nodes"]:
            left = wanted.get(item.get("sku") or "", 0)
            quantity = min(left, int(item["remainingQuantity"]))
            if quantity > 0:
                wanted[item["sku"]] = left - quantity
                lines.append({"id": item["id"], "quantity": quantity})
        if lines:
            picked.append({"fulfillmentOrderId": fo["id"], "fulfillmentOrderLineItems": lines})
    if picked:
        return picked
    return [
        {"fulfillmentOrderId": fo["id"]}  # the whole fulfilment order
        for fo in open_orders
        if any(int(i["remainingQuantity"]) > 0 for i in fo["lineItems"]["nodes"])
    ]


class WooCommerceClient:
    """Order notes and status of the WooCommerce REST API (v3, basic auth over HTTPS)."""

    def __init__(self, http: httpx.AsyncClient, shop: Shop, *, refund_money: bool = False) -> None:
        self.http = http
        self.refund_money = refund_money
        self.base = f"{shop.api_base_url.rstrip('/')}/wp-json/wc/v3/orders"
        creds = shop.credentials
        self.auth = httpx.BasicAuth(creds.consumer_key or "", creds.consumer_secret or "")
        self.shop = shop

    async def _call(self, what: str, method: str, path: str, body: Any = None) -> Any:
        response = await _send(
            self.http, what, method=method, url=f"{self.base}/{path}", json=body, auth=self.auth
        )
        _check_status(response, what)
        return json.loads(response.content) if response.content else None

    async def fulfil(self, task: WritebackTask) -> str:
        order, number = task.external_id, task.payload["tracking_number"]
        notes = await self._call("list notes", "GET", f"{order}/notes")
        if not any(number in str(n.get("note", "")) for n in notes or []):
            url = task.payload.get("tracking_url")
            text = f"Shipped with {task.payload['carrier']}, tracking number {number}"
            await self._call(
                "add note",
                "POST",
                f"{order}/notes",
                {
                    "note": f"{text}: {url}" if url else text,
                    "customer_note": self.shop.notify_customer,
                },
            )
        if task.payload.get("all_shipped"):
            await self._call("complete", "PUT", order, {"status": "completed"})
            return "noted and completed"
        return "noted"

    async def cancel(self, task: WritebackTask) -> str:
        await self._call("cancel", "PUT", task.external_id, {"status": "cancelled"})
        return "cancelled"

    async def refund(self, task: WritebackTask) -> str:
        """`POST orders/{id}/refunds` once per refund id (`api_refund` only with
        `refund_money`: otherwise WooCommerce records it without calling the gateway)."""
        order = task.external_id
        refunds = await self._call("list refunds", "GET", f"{order}/refunds")
        if any(refund_marker(task) in str(r.get("reason", "")) for r in refunds or []):
            return "already refunded"
        body = {
            "amount": task.payload["amount"],
            "reason": refund_note(task),
            "api_refund": self.refund_money,
        }
        await self._call("refund", "POST", f"{order}/refunds", body)
        return "refunded" if self.refund_money else "refund recorded"


def client_for(
    http: httpx.AsyncClient, shop: Shop, *, refund_money: bool = False
) -> ShopifyClient | WooCommerceClient:
    if shop.platform == "shopify":
        return ShopifyClient(http, shop, refund_money=refund_money)
    return WooCommerceClient(http, shop, refund_money=refund_money)
