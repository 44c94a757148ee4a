"""Marketplace webhook routes (Shopify, WooCommerce): verify, parse, hand over, render.

What a topic means and the transactions behind it live in `handlers.webhooks`; here are
only the HTTP concerns: the signature, the delivery headers, WooCommerce's unsigned URL
check, and the JSON answer. The signing secret is the registered shop's (named by
`X-Shopify-Shop-Domain` / `X-WC-Webhook-Source`), else the env secret (the default shop).
Each delivery is acknowledged as soon as its effect (and its outbox row) is committed;
everything slower happens behind the outbox.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import SecretStr

from services.order import handlers, marketplaces
from services.order.api import Runtime, UoW, settings_of
from services.order.handlers.webhooks import (
    CancelAccepted,
    CancelledBeforehand,
    CustomerRedacted,
    Duplicate,
    Ignored,
    Marketplace,
    NotCancellable,
    OrderAccepted,
    UnknownOrder,
)
from services.order.shops.handlers import remember_origin, webhook_shop
from shared.http import Unauthorized, Unprocessable

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _require(value: str | None, header: str, max_length: int = 128) -> str:
    if not value or len(value) > max_length:
        reason = "missing" if not value else f"longer than {max_length} characters"
        raise Unprocessable(
            f"{header} header is {reason}",
            details=[{"field": f"header.{header}", "reason": reason}],
        )
    return value


def _verify(raw: bytes, signature: str | None, secret: SecretStr | None, header: str) -> None:
    if not marketplaces.verify(raw, signature, secret.get_secret_value() if secret else None):
        raise Unauthorized(f"invalid or missing {header}")


def _render(outcome: handlers.WebhookOutcome) -> dict[str, Any]:
    match outcome:
        case Duplicate():
            return {"status": "duplicate"}
        case OrderAccepted(order_id, created):
            return {"status": "accepted", "order_id": order_id, "created": created}
        case CancelAccepted(order_id):
            return {"status": "accepted", "order_id": order_id}
        case NotCancellable():
            return {"status": "not_cancellable", "reason": "already shipped"}
        case UnknownOrder():
            return {
                "status": "ignored",
                "reason": "no such order yet: its creation will not be taken",
            }
        case CancelledBeforehand():
            return {"status": "ignored", "reason": "cancelled before it arrived"}
        case CustomerRedacted(orders):
            return {"status": "accepted", "redacted": orders}
        case Ignored(topic):
            return {"status": "ignored", "reason": f"topic {topic} is not handled"}


async def _deliver(
    source: Marketplace, raw: bytes, delivery_id: str, topic: str, shop_id: str | None, uow: UoW
) -> dict[str, Any]:
    payload = marketplaces.load_json(raw)
    webhook = handlers.MarketplaceWebhook(source, delivery_id, topic, payload, shop_id)
    outcome = await handlers.handle_marketplace_webhook(webhook, uow)
    if shop_id is not None and isinstance(outcome, OrderAccepted):
        # which registered shop the order came from, for writing back to it
        await remember_origin(outcome.order_id, shop_id, str(payload["id"]).strip(), uow)
    return _render(outcome)


@router.post(
    "/shopify", summary="Shopify webhooks: orders/create, orders/cancelled, customers/redact"
)
async def shopify(
    request: Request,
    runtime: Runtime,
    uow: UoW,
    x_shopify_hmac_sha256: Annotated[str | None, Header()] = None,
    x_shopify_topic: Annotated[str | None, Header()] = None,
    x_shopify_webhook_id: Annotated[str | None, Header()] = None,
    x_shopify_shop_domain: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    raw = await request.body()
    default = settings_of(runtime).shopify_secret
    shop = await webhook_shop("shopify", x_shopify_shop_domain, default, uow)
    _verify(raw, x_shopify_hmac_sha256, shop.secret, "X-Shopify-Hmac-Sha256")
    delivery = _require(x_shopify_webhook_id, "X-Shopify-Webhook-Id")
    topic = _require(x_shopify_topic, "X-Shopify-Topic", 64)
    return await _deliver("shopify", raw, delivery, topic, shop.shop_id, uow)


@router.post("/woocommerce", summary="WooCommerce webhooks: ping, order.created, order.updated")
async def woocommerce(
    request: Request,
    runtime: Runtime,
    uow: UoW,
    x_wc_webhook_signature: Annotated[str | None, Header()] = None,
    x_wc_webhook_topic: Annotated[str | None, Header()] = None,
    x_wc_webhook_delivery_id: Annotated[str | None, Header()] = None,
    x_wc_webhook_source: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    raw = await request.body()
    if x_wc_webhook_signature is None and marketplaces.is_woocommerce_ping(raw):
        return {"status": "pong"}  # WooCommerce checks the URL with an unsigned form ping
    default = settings_of(runtime).woocommerce_secret
    shop = await webhook_shop("woocommerce", x_wc_webhook_source, default, uow)
    _verify(raw, x_wc_webhook_signature, shop.secret, "X-WC-Webhook-Signature")
    if marketplaces.is_woocommerce_ping(raw):
        return {"status": "pong"}
    delivery = _require(x_wc_webhook_delivery_id, "X-WC-Webhook-Delivery-ID")
    topic = _require(x_wc_webhook_topic, "X-WC-Webhook-Topic", 64)
    return await _deliver("woocommerce", raw, delivery, topic, shop.shop_id, uow)
