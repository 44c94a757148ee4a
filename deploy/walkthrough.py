"""The README's five-minute walkthrough as a script, run by the tests against `make up`.

    make up                              # in one terminal
    .venv/bin/python -m deploy.walkthrough   # in another: every step, checked

Each step prints the `curl` a reader would type and fails loudly when the answer is not
what the README promises, so the walkthrough cannot drift from the code. Ports follow the
same `DROPSHIP_<SERVICE>_PORT` variables as `make up`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx

API_KEY = os.environ.get("DROPSHIP_WALKTHROUGH_API_KEY", "dev-api-key")
HEADERS = {"X-API-Key": API_KEY}
DEFAULT_PORTS = {"order": 8001, "supplier": 8002, "notify": 8003, "metrics": 8004}

ORDER = {
    "channel": "storefront",
    "currency": "USD",
    "customer": {"name": "张三", "email": "zhang@example.com", "locale": "zh-CN"},
    "shipping_address": {
        "line1": "人民路 1 号",
        "city": "上海",
        "region": "上海市",
        "postal_code": "200000",
        "country": "CN",
    },
    "lines": [{"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"}],
}
"""The README's first order, exactly (a test compares the two)."""


class WalkthroughFailed(AssertionError):
    """A step did not answer what the README says it does."""


def urls() -> dict[str, str]:
    return {
        name: f"http://127.0.0.1:{os.environ.get(f'DROPSHIP_{name.upper()}_PORT', port)}"
        for name, port in DEFAULT_PORTS.items()
    }


def _step(title: str, curl: str) -> None:
    print(f"\n# {title}\n$ {curl}", flush=True)


def _expect(response: httpx.Response, status: int) -> Any:
    if response.status_code != status:
        raise WalkthroughFailed(
            f"{response.request.method} {response.request.url}: expected {status}, "
            f"got {response.status_code}: {response.text[:500]}"
        )
    body = response.json()
    print(json.dumps(body, ensure_ascii=False)[:300], flush=True)
    return body


def _poll(probe: Callable[[], Any], what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise WalkthroughFailed(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.3)


def run(base: dict[str, str], *, timeout: float = 60.0) -> str:
    """Every step of the walkthrough; returns the order id."""
    with httpx.Client(timeout=10, headers=HEADERS) as http:
        _step(
            "place a storefront order",
            f"curl -s -X POST {base['order']}/v1/orders -H 'X-API-Key: {API_KEY}' "
            f"-H 'Content-Type: application/json' -d '{json.dumps(ORDER, ensure_ascii=False)}'",
        )
        key = {"Idempotency-Key": f"walkthrough-{uuid.uuid4()}"}
        placed = _expect(http.post(f"{base['order']}/v1/orders", json=ORDER, headers=key), 201)
        order_id = str(placed["id"])
        _step("the same order again with its Idempotency-Key: the first answer", "(same curl)")
        again = _expect(http.post(f"{base['order']}/v1/orders", json=ORDER, headers=key), 201)
        if again["id"] != order_id:
            raise WalkthroughFailed("a repeated Idempotency-Key created a second order")

        order_url = f"{base['order']}/v1/orders/{order_id}"
        _step("follow it", f"curl -s {order_url} -H 'X-API-Key: {API_KEY}'")
        _expect(http.get(order_url), 200)
        allocations = f"{base['supplier']}/v1/allocations?order_id={order_id}"
        _step("routed to a demo supplier", f"curl -s '{allocations}' -H 'X-API-Key: {API_KEY}'")
        _poll(lambda: http.get(allocations).json().get("items"), "an allocation", timeout)
        _expect(http.get(allocations), 200)
        _step("its timeline", f"curl -s {order_url}/timeline -H 'X-API-Key: {API_KEY}'")
        _expect(http.get(f"{order_url}/timeline"), 200)

        notices = f"{base['notify']}/v1/notifications?order_id={order_id}"
        _step("notices to the customer", f"curl -s '{notices}' -H 'X-API-Key: {API_KEY}'")
        _expect(http.get(notices), 200)
        alerts = f"{base['notify']}/v1/alerts?open=true"
        _step("open ops alerts", f"curl -s '{alerts}' -H 'X-API-Key: {API_KEY}'")
        _expect(http.get(alerts), 200)

        counts = f"{base['metrics']}/v1/events/counts"
        _step("events the metrics service applied", f"curl -s {counts} -H 'X-API-Key: {API_KEY}'")
        _poll(lambda: http.get(counts).json().get("order-placed"), "order-placed counted", timeout)
        for path in ("/v1/kpis?group_by=supplier", "/v1/suppliers/ranking"):
            _step(
                "the business view", f"curl -s '{base['metrics']}{path}' -H 'X-API-Key: {API_KEY}'"
            )
            _expect(http.get(base["metrics"] + path), 200)
        _step("the dashboard", f"open {base['metrics']}/?key={API_KEY}")
        page = http.get(f"{base['metrics']}/", params={"key": API_KEY})
        if page.status_code != 200:
            raise WalkthroughFailed(f"dashboard answered {page.status_code}")
    return order_id


def main() -> int:
    try:
        order_id = run(urls())
    except (WalkthroughFailed, httpx.HTTPError) as exc:
        print(f"\nwalkthrough failed: {exc}", file=sys.stderr)
        return 1
    print(f"\nwalkthrough done: order {order_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
