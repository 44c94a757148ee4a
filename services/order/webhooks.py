"""Marketplace webhooks (Shopify, WooCommerce): verify, dedupe, map, hand to the handlers.

Each delivery is acknowledged as soon as the order (and its outbox row) is committed;
everything slower happens behind the outbox. A delivery id seen before is answered
`duplicate` without effect; the effects are idempotent on their own too (one order per
external id, cancelling twice is a no-op), so a retry after a crash is harmless.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import ValidationError

from services.order import handlers, marketplaces
from services.order.api import Runtime, UoW, settings_of
from services.order.domain import CannotCancel
from services.order.schemas import OrderIn, render_order
from services.order.store import OrderUnitOfWork
from shared.http import Unauthorized, Unprocessable

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _mapped(body: dict[str, Any], source: str) -> OrderIn:
    try:
        return OrderIn.model_validate(body)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()
        ]
        raise Unprocessable(
            f"{source} order cannot be accepted: {details[0]['field']}: {details[0]['reason']}",
            details=details,
        ) from exc


def _payload_error(exc: marketplaces.MarketplacePayloadError) -> Unprocessable:
    return Unprocessable(
        f"{exc.field}: {exc.reason}", details=[{"field": f"body.{exc.field}", "reason": exc.reason}]
    )


def _require(value: str | None, header: str, max_length: int = 128) -> str:
    if not value or len(value) > max_length:
        reason = "missing" if not value else f"longer than {max_length} characters"
        raise Unprocessable(
            f"{header} header is {reason}",
            details=[{"field": f"header.{header}", "reason": reason}],
        )
    return value


async def _place(body: dict[str, Any], source: str, uow: OrderUnitOfWork) -> dict[str, Any]:
    order_in = _mapped(body, source)
    outcome = await handlers.place_order(
        order_in.to_command(), uow, render_order, existing_external="return"
    )
    return {
        "status": "accepted",
        "order_id": outcome.body["id"],
        "created": outcome.status_code == 201,
    }


async def _cancel(
    channel: str, external_id: str, reason: str, uow: OrderUnitOfWork
) -> dict[str, Any]:
    try:
        order = await handlers.cancel_external(channel, external_id, reason, uow)
    except CannotCancel:
        return {"status": "not_cancellable", "reason": "already shipped"}
    if order is None:
        return {"status": "ignored", "reason": "no such order"}
    return {"status": "accepted", "order_id": order.id}


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
) -> dict[str, Any]:
    raw = await request.body()
    secret = settings_of(runtime).shopify_secret
    if not marketplaces.verify(
        raw, x_shopify_hmac_sha256, secret.get_secret_value() if secret else None
    ):
        raise Unauthorized("invalid or missing X-Shopify-Hmac-Sha256")
    delivery = _require(x_shopify_webhook_id, "X-Shopify-Webhook-Id")
    topic = _require(x_shopify_topic, "X-Shopify-Topic", 64)
    if await handlers.delivery_seen("shopify", delivery, uow):
        return {"status": "duplicate"}
    try:
        payload = marketplaces.load_json(raw)
        if topic == "orders/create":
            result = await _place(marketplaces.shopify_order(payload), "Shopify", uow)
        elif topic == "orders/cancelled":
            external = marketplaces.shopify_cancelled_id(payload)
            result = await _cancel("shopify", external, "cancelled in Shopify", uow)
        elif topic == "customers/redact":
            email = marketplaces.shopify_redact_email(payload)
            count = await handlers.redact_customer(email, uow) if email else 0
            result = {"status": "accepted", "redacted": count}
        else:
            result = {"status": "ignored", "reason": f"topic {topic} is not handled"}
    except marketplaces.MarketplacePayloadError as exc:
        raise _payload_error(exc) from exc
    await handlers.first_delivery("shopify", delivery, topic, uow)
    return result


@router.post("/woocommerce", summary="WooCommerce webhooks: ping, order.created, order.updated")
async def woocommerce(
    request: Request,
    runtime: Runtime,
    uow: UoW,
    x_wc_webhook_signature: Annotated[str | None, Header()] = None,
    x_wc_webhook_topic: Annotated[str | None, Header()] = None,
    x_wc_webhook_delivery_id: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    raw = await request.body()
    if x_wc_webhook_signature is None and marketplaces.is_woocommerce_ping(raw):
        return {"status": "pong"}  # WooCommerce checks the URL with an unsigned form ping
    secret = settings_of(runtime).woocommerce_secret
    if not marketplaces.verify(
        raw, x_wc_webhook_signature, secret.get_secret_value() if secret else None
    ):
        raise Unauthorized("invalid or missing X-WC-Webhook-Signature")
    if marketplaces.is_woocommerce_ping(raw):
        return {"status": "pong"}
    delivery = _require(x_wc_webhook_delivery_id, "X-WC-Webhook-Delivery-ID")
    topic = _require(x_wc_webhook_topic, "X-WC-Webhook-Topic", 64)
    if await handlers.delivery_seen("woocommerce", delivery, uow):
        return {"status": "duplicate"}
    try:
        payload = marketplaces.load_json(raw)
        if topic in ("order.created", "order.updated") and marketplaces.woocommerce_is_cancelled(
            payload
        ):
            external = marketplaces.woocommerce_id(payload)
            result = await _cancel("woocommerce", external, "cancelled in WooCommerce", uow)
        elif topic == "order.created":
            result = await _place(marketplaces.woocommerce_order(payload), "WooCommerce", uow)
        else:
            result = {"status": "ignored", "reason": f"topic {topic} is not handled"}
    except marketplaces.MarketplacePayloadError as exc:
        raise _payload_error(exc) from exc
    await handlers.first_delivery("woocommerce", delivery, topic, uow)
    return result
