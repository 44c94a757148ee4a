"""Marketplace simulator app: `uvicorn --factory rigs.marketplace_simulator.app:create_app`.

Each shop lives under `/{shop}`: `POST /{shop}/admin/api/2024-10/graphql.json` (Shopify,
`X-Shopify-Access-Token`) or `/{shop}/wp-json/wc/v3/orders/...` (WooCommerce, basic auth
with the consumer key and secret), so a shop's `api_base_url` is `<sim>/{shop}`. Steered by
`PUT /_control/shops/{shop}`; `GET /_control/calls` lists every call it accepted.
In memory, written through to `<state_dir>/marketplace-simulator.db` when set: run one process.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from rigs.marketplace_simulator.shopify import execute
from rigs.marketplace_simulator.state import Call, Marketplace, SimShop, Steering

SHOPIFY_VERSION = "2024-10"


class MarketplaceSimSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DROPSHIP_MARKETPLACE_SIM_", extra="ignore", populate_by_name=True
    )
    host: str = "127.0.0.1"
    port: int = Field(8011, ge=1, le=65535)
    state_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices("DROPSHIP_MARKETPLACE_SIM_STATE_DIR", "DROPSHIP_DATA_DIR"),
    )
    """Where its shops' orders and calls are kept across restarts; unset: memory only."""


class ShopControl(BaseModel):
    model_config = ConfigDict(extra="forbid")
    platform: Literal["shopify", "woocommerce"] | None = None
    access_token: str | None = None
    consumer_key: str | None = None
    consumer_secret: str | None = None
    throttled_calls: int | None = Field(None, ge=0)
    rate_limited_calls: int | None = Field(None, ge=0)
    failing_calls: int | None = Field(None, ge=0)
    forbidden_calls: int | None = Field(None, ge=0)
    retry_after_s: float | None = Field(None, ge=0)
    restore_rate: float | None = Field(None, gt=0)


class LineItem(BaseModel):
    sku: str | None = None
    quantity: int = Field(1, ge=1)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"errors": message}, status_code=status, headers=headers)


def create_app(settings: MarketplaceSimSettings | None = None) -> FastAPI:
    settings = settings or MarketplaceSimSettings()
    market = Marketplace()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if settings.state_dir is not None:
            market.open(settings.state_dir)
        try:
            yield
        finally:
            market.close()

    app = FastAPI(title="Dropship marketplace simulator", version="0.1.0", lifespan=lifespan)
    app.state.market = market
    control = APIRouter(prefix="/_control", tags=["control"])

    def shop_of(name: str, platform: str) -> SimShop:
        shop = market.shops.get(name)
        if shop is None or shop.platform != platform:
            raise HTTPException(404, f"no {platform} shop {name}")
        return shop

    def woo_order_or_refusal(
        name: str, order_id: str, authorization: str | None
    ) -> dict[str, Any] | JSONResponse:
        """A WooCommerce shop's order (made on first sight), or the shop's refusal of the call."""
        shop = shop_of(name, "woocommerce")
        refused = _woo_gate(shop, authorization)
        if refused is not None:
            market.save(shop)  # a steered refusal used up one of its counters
            return refused
        return shop.woo_order(order_id)

    def written(shop_name: str, call: Call) -> None:
        """A write the shop took: its order and the call are kept."""
        market.save(market.shops[shop_name], call.order_external_id)
        market.record(call)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @control.put("/shops/{name}")
    async def put_shop(name: str, body: ShopControl) -> dict[str, Any]:
        shop = market.shops.get(name)
        if shop is None:
            if body.platform is None:
                raise HTTPException(422, "platform is required for a new shop")
            shop = market.shops[name] = SimShop(name, body.platform)
        for key in ("access_token", "consumer_key", "consumer_secret"):
            if getattr(body, key) is not None:
                setattr(shop, key, getattr(body, key))
        for key in Steering.__dataclass_fields__:
            if getattr(body, key) is not None:
                setattr(shop.steering, key, getattr(body, key))
        market.save(shop)
        return _render_shop(shop)

    @control.get("/shops/{name}")
    async def get_shop(name: str) -> dict[str, Any]:
        if name not in market.shops:
            raise HTTPException(404, f"no shop {name}")
        return _render_shop(market.shops[name]) | {"orders": market.shops[name].orders}

    @control.put("/shops/{name}/orders/{order_id}")
    async def put_shopify_order(name: str, order_id: str, lines: list[LineItem]) -> dict[str, Any]:
        """Give a Shopify order its line items (else it has one SKU-less line)."""
        order = shop_of(name, "shopify").shopify_order(order_id)
        order["fulfillment_orders"][0]["lineItems"] = [
            {
                "id": f"gid://shopify/FulfillmentOrderLineItem/{order_id}{i}",
                "sku": line.sku,
                "remainingQuantity": line.quantity,
            }
            for i, line in enumerate(lines, start=1)
        ]
        market.save(market.shops[name], order_id)
        return order

    @control.get("/calls")
    async def calls(shop: str | None = None) -> dict[str, Any]:
        items = [c.render() for c in market.calls if shop is None or c.shop == shop]
        return {"items": items, "next_cursor": None}

    @app.post(f"/{{name}}/admin/api/{SHOPIFY_VERSION}/graphql.json")
    async def graphql(
        name: str,
        body: dict[str, Any],
        x_shopify_access_token: Annotated[str | None, Header()] = None,
    ) -> Any:
        shop = shop_of(name, "shopify")
        if not shop.authorised(x_shopify_access_token, None):
            return _error(401, "[API] Invalid API key or access token")
        refused = _refusal(shop)
        if refused is not None:
            market.save(shop)
            return refused
        data, call = execute(shop, str(body.get("query", "")), body.get("variables") or {})
        if call is not None:
            written(name, call)
        return {"data": data, "extensions": _cost(shop, 10)}

    @app.api_route("/{name}/wp-json/wc/v3/orders/{order_id}", methods=["GET", "PUT"])
    async def woo_order(
        name: str,
        order_id: str,
        body: dict[str, Any] | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Any:
        order = woo_order_or_refusal(name, order_id, authorization)
        if isinstance(order, JSONResponse):
            return order
        if body and "status" in body:
            order["status"] = str(body["status"])
            written(
                name, Call("woocommerce", name, "orders.update", order_id, status=order["status"])
            )
        return order

    @app.api_route("/{name}/wp-json/wc/v3/orders/{order_id}/notes", methods=["GET", "POST"])
    async def woo_notes(
        name: str,
        order_id: str,
        body: dict[str, Any] | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Any:
        order = woo_order_or_refusal(name, order_id, authorization)
        if isinstance(order, JSONResponse):
            return order
        if body is None:
            return order["notes"]
        text = str(body.get("note", ""))
        note = {
            "id": len(order["notes"]) + 1,
            "note": text,
            "customer_note": bool(body.get("customer_note")),
        }
        order["notes"].append(note)
        number = re.search(r"tracking number (\S+?)(?::|$)", text)
        number_text = number.group(1) if number else None
        written(name, Call("woocommerce", name, "notes.create", order_id, number_text))
        return JSONResponse(note, status_code=201)

    @app.api_route("/{name}/wp-json/wc/v3/orders/{order_id}/refunds", methods=["GET", "POST"])
    async def woo_refunds(
        name: str,
        order_id: str,
        body: dict[str, Any] | None = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Any:
        order = woo_order_or_refusal(name, order_id, authorization)
        if isinstance(order, JSONResponse):
            return order
        if body is None:
            return order["refunds"]
        amount = str(body.get("amount", ""))
        if not re.fullmatch(r"\d+(\.\d+)?", amount):
            body = {
                "code": "woocommerce_rest_invalid_order_refund",
                "message": "Refund amount must be greater than zero.",
                "data": {"status": 400},
            }
            return JSONResponse(body, status_code=400)
        refund = {
            "id": len(order["refunds"]) + 1,
            "amount": amount,
            "reason": str(body.get("reason", "")),
            "refunded_payment": bool(body.get("api_refund", True)),
        }
        order["refunds"].append(refund)
        written(name, Call("woocommerce", name, "refunds.create", order_id, amount=amount))
        return JSONResponse(refund, status_code=201)

    app.include_router(control)
    return app


def _render_shop(shop: SimShop) -> dict[str, Any]:
    return {
        "name": shop.name,
        "platform": shop.platform,
        "steering": vars(shop.steering),
        "refused": shop.refused,
    }


def _cost(shop: SimShop, requested: int, available: float = 1990.0) -> dict[str, Any]:
    return {
        "cost": {
            "requestedQueryCost": requested,
            "actualQueryCost": requested if available else None,
            "throttleStatus": {
                "maximumAvailable": 2000.0,
                "currentlyAvailable": available,
                "restoreRate": shop.steering.restore_rate,
            },
        }
    }


def _refusal(shop: SimShop) -> JSONResponse | None:
    failure = shop.misbehave()
    if failure == "throttled_calls" and shop.platform == "shopify":
        body = {
            "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED"}}],
            "extensions": _cost(shop, 10, 0.0),
        }
        return JSONResponse(body)
    if failure in ("throttled_calls", "rate_limited_calls"):
        retry = f"{shop.steering.retry_after_s:g}"
        return _error(429, "Exceeded rate limit", {"Retry-After": retry})
    if failure == "failing_calls":
        return _error(500, "Internal Server Error")
    if failure == "forbidden_calls" and shop.platform == "shopify":
        return _error(403, "[API] This action requires merchant approval for write_orders scope.")
    if failure == "forbidden_calls":
        body = {
            "code": "woocommerce_rest_cannot_edit",
            "message": "Sorry, you are not allowed to edit this resource.",
            "data": {"status": 403},
        }
        return JSONResponse(body, status_code=403)
    return None


def _woo_gate(shop: SimShop, authorization: str | None) -> JSONResponse | None:
    if not shop.authorised(None, authorization):
        body = {
            "code": "woocommerce_rest_cannot_view",
            "message": "Sorry, you cannot list resources.",
            "data": {"status": 401},
        }
        return JSONResponse(body, status_code=401)
    return _refusal(shop)
