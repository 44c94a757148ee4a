"""The simulator's shops: credentials, steering, orders and the calls received; in memory,
written through to a state file when a state folder is set."""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from rigs.marketplace_simulator.store import CALL, ORDER, SHOP, StateFile

Platform = Literal["shopify", "woocommerce"]


@dataclass
class Steering:
    """Per-shop misbehaviour: the next N calls are throttled, rate limited or fail."""

    throttled_calls: int = 0
    """Shopify: answered 200 with a THROTTLED error and `extensions.cost.throttleStatus`."""
    rate_limited_calls: int = 0
    """Answered 429 with `Retry-After: retry_after_s`."""
    failing_calls: int = 0
    """Answered 500."""
    forbidden_calls: int = 0
    """Answered 403 (a token without the scope the call needs): permanent, never retried."""
    retry_after_s: float = 1.0
    restore_rate: float = 50.0


@dataclass
class SimShop:
    name: str
    platform: Platform
    access_token: str | None = None
    consumer_key: str | None = None
    consumer_secret: str | None = None
    steering: Steering = field(default_factory=Steering)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)

    def authorised(self, token: str | None, basic: str | None) -> bool:
        if self.platform == "shopify":
            return bool(
                token and self.access_token and hmac.compare_digest(token, self.access_token)
            )
        if not basic or not basic.lower().startswith("basic "):
            return False
        try:
            user, _, password = base64.b64decode(basic[6:]).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return (user, password) == (self.consumer_key, self.consumer_secret)

    def misbehave(self) -> str | None:
        """Which failure the next call suffers (consuming one from its counter), if any."""
        for name in ("throttled_calls", "rate_limited_calls", "failing_calls", "forbidden_calls"):
            left = getattr(self.steering, name)
            if left > 0:
                setattr(self.steering, name, left - 1)
                self.refused[name] = self.refused.get(name, 0) + 1
                return name
        return None

    def shopify_order(self, order_id: str) -> dict[str, Any]:
        """An order is known as soon as it is asked about: one open fulfilment order."""
        return self.orders.setdefault(
            order_id,
            {
                "fulfillments": [],
                "refunds": [],
                "transactions": [
                    {
                        "id": f"gid://shopify/OrderTransaction/{order_id}1",
                        "kind": "SALE",
                        "status": "SUCCESS",
                        "gateway": "shopify_payments",
                    }
                ],
                "cancelled": False,
                "fulfillment_orders": [
                    {
                        "id": f"gid://shopify/FulfillmentOrder/{order_id}",
                        "status": "OPEN",
                        "lineItems": [
                            {
                                "id": f"gid://shopify/FulfillmentOrderLineItem/{order_id}1",
                                "sku": None,
                                "remainingQuantity": 1,
                            }
                        ],
                    }
                ],
            },
        )

    def woo_order(self, order_id: str) -> dict[str, Any]:
        return self.orders.setdefault(
            order_id, {"id": order_id, "status": "processing", "notes": [], "refunds": []}
        )


@dataclass
class Call:
    platform: Platform
    shop: str
    operation: str
    order_external_id: str | None
    tracking_number: str | None = None
    status: str | None = None
    amount: str | None = None
    time: datetime = field(default_factory=lambda: datetime.now(UTC))

    def render(self) -> dict[str, Any]:
        out = {
            "platform": self.platform,
            "shop": self.shop,
            "operation": self.operation,
            "order_external_id": self.order_external_id,
            "tracking_number": self.tracking_number,
            "time": self.time.isoformat().replace("+00:00", "Z"),
        }
        if self.amount is not None:
            out["amount"] = self.amount
        return out | ({"status": self.status} if self.status else {})


@dataclass
class Marketplace:
    shops: dict[str, SimShop] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    store: StateFile | None = None

    def open(self, folder: Path) -> None:
        """Keep the state in `folder` from now on, starting from what it already holds."""
        self.store = StateFile(folder)
        for name, _, data in self.store.load(SHOP):
            steering, refused = data.pop("steering"), data.pop("refused")
            self.shops[name] = SimShop(**data, steering=Steering(**steering), refused=refused)
        for name, order_id, data in self.store.load(ORDER):
            if name in self.shops:
                self.shops[name].orders[order_id] = data
        for _, _, data in self.store.load(CALL):
            self.calls.append(Call(**data | {"time": datetime.fromisoformat(data["time"])}))

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def save(self, shop: SimShop, order_id: str | None = None) -> None:
        """Write the shop (steering and refusals included) and one of its orders through."""
        if self.store is None:
            return
        data = {k: v for k, v in vars(shop).items() if k != "orders"}
        data |= {"steering": asdict(shop.steering), "refused": dict(shop.refused)}
        self.store.put(SHOP, shop.name, "", data)
        if order_id is not None and order_id in shop.orders:
            self.store.put(ORDER, shop.name, order_id, shop.orders[order_id])

    def record(self, call: Call) -> None:
        self.calls.append(call)
        if self.store is not None:
            data = asdict(call) | {"time": call.time.isoformat()}
            self.store.put(CALL, call.shop, f"{len(self.calls):012d}", data)
