"""Shop handlers: register, list and edit shops; resolve a webhook's shop; queue write-backs.

Write-backs are queued by the consumer of `shipment-dispatched` (and `order-cancelled`)
inside the consumer's transaction, next to its inbox row: a redelivered event finds its
inbox row and queues nothing, a crash before the commit queues nothing, so every shipment
is queued exactly once; the queue's key makes a second queueing a no-op anyway.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any

from pydantic import SecretStr

from services.order.domain import Status
from services.order.handlers import apply_event
from services.order.shops.domain import (
    Credentials,
    DuplicateShop,
    Platform,
    Shop,
    ShopNotFound,
    UnknownShop,
    normalise_domain,
    tracking_url,
)
from services.order.shops.repository import OrderShops, ShopRepository, WritebackQueue
from services.order.store import OrderUnitOfWork
from shared.events import Envelope, OrderCancelled, RefundIssued, ShipmentDispatched

SHOP_CANCEL_REASONS = ("cancelled in Shopify", "cancelled in WooCommerce")
"""Cancellations that came from the shop itself: nothing to write back."""


def shops(uow: OrderUnitOfWork) -> ShopRepository:
    return ShopRepository(uow.session, uow.dialect, uow.cipher)


def origins(uow: OrderUnitOfWork) -> OrderShops:
    return OrderShops(uow.session, uow.dialect)


def queue(uow: OrderUnitOfWork) -> WritebackQueue:
    return WritebackQueue(uow.session, uow.dialect, uow.writeback_queued)


@dataclass(frozen=True)
class RegisterShop:
    platform: Platform
    domain: str
    api_base_url: str
    credentials: Credentials
    notify_customer: bool = True


async def register_shop(cmd: RegisterShop, uow: OrderUnitOfWork) -> Shop:
    shop = Shop(
        id=f"shop_{uuid.uuid4().hex[:16]}",
        platform=cmd.platform,
        domain=normalise_domain(cmd.domain),
        api_base_url=cmd.api_base_url,
        credentials=cmd.credentials,
        notify_customer=cmd.notify_customer,
    )
    shop.check()
    async with uow:
        if not await shops(uow).add(shop):
            raise DuplicateShop(shop.platform, shop.domain)
        await uow.commit()
    return shop


async def list_shops(uow: OrderUnitOfWork) -> list[Shop]:
    async with uow:
        return await shops(uow).all()


async def reseal_shop_secrets(uow: OrderUnitOfWork) -> int:
    """Every shop's secrets sealed again under the active PII key; how many shops changed."""
    async with uow:
        changed = await shops(uow).reseal_stale()
        await uow.commit()
    return changed


async def update_shop(shop_id: str, changes: dict[str, Any], uow: OrderUnitOfWork) -> Shop:
    """Apply the given fields (api_base_url, notify_customer, active, any secret)."""
    async with uow:
        repo = shops(uow)
        shop = await repo.get(shop_id)
        if shop is None:
            raise ShopNotFound(shop_id)
        secrets = {k: v for k, v in changes.items() if hasattr(shop.credentials, k)}
        plain = {k: v for k, v in changes.items() if k not in secrets}
        shop = replace(shop, credentials=replace(shop.credentials, **secrets), **plain)
        shop.check()
        await repo.save(shop)
        await uow.commit()
    return shop


@dataclass(frozen=True)
class WebhookShop:
    """Whose secret verifies a delivery: a registered shop, or the default (env) shop."""

    shop_id: str | None
    secret: SecretStr | None


async def webhook_shop(
    platform: Platform, domain: str | None, default: SecretStr | None, uow: OrderUnitOfWork
) -> WebhookShop:
    """The shop named by the delivery's header; the env secret stands for any other shop.

    A registered but disabled shop, or an unregistered one when no env secret is set,
    is `UnknownShop` (401): nothing is stored.
    """
    name = normalise_domain(domain) if domain else ""
    if name:
        async with uow:
            shop = await shops(uow).by_domain(platform, name)
        if shop is not None:
            if not shop.active:
                raise UnknownShop(f"{platform} shop {shop.domain} is disabled")
            return WebhookShop(shop.id, SecretStr(shop.credentials.webhook_secret))
    if default is None:
        raise UnknownShop(f"unknown {platform} shop")
    return WebhookShop(None, default)


async def remember_origin(
    order_id: str, shop_id: str, external_id: str, uow: OrderUnitOfWork
) -> None:
    async with uow:
        await origins(uow).remember(order_id, shop_id, external_id)
        await uow.commit()


async def apply_dispatch(
    envelope: Envelope, event: ShipmentDispatched, uow: OrderUnitOfWork
) -> None:
    """Consumer: the order moves on, and its shop's fulfilment is queued, in one transaction
    (from the order as the event left it: SKUs, quantities, status; no PII read). Only a
    registered shop's order (`shop_id`) has an origin to look up: a storefront order or
    the default shop's has none, so no statement is spent on it."""
    order = await apply_event(envelope, event, uow)
    if order.shop_id is None:
        return
    origin = await origins(uow).of(event.order_id)
    if origin is None:
        return
    shipped = set(event.line_ids)
    skus: dict[str, int] = {}
    for line in order.lines:
        if line.line_id in shipped:
            skus[line.sku] = skus.get(line.sku, 0) + line.quantity
    await queue(uow).put(
        f"fulfil:{event.order_id}:{event.tracking_number}",
        "fulfil",
        event.order_id,
        origin[0],
        origin[1],
        {
            "carrier": event.carrier,
            "tracking_number": event.tracking_number,
            "tracking_url": tracking_url(event.carrier, event.tracking_number),
            "skus": skus,
            "all_shipped": order.status in (Status.SHIPPED, Status.DELIVERED),
        },
    )


async def queue_cancellation(
    envelope: Envelope, event: OrderCancelled, uow: OrderUnitOfWork
) -> None:
    """Consumer of our own `order-cancelled`: tell the shop, unless the shop cancelled it."""
    if event.reason in SHOP_CANCEL_REASONS:
        return
    origin = await origins(uow).of(event.order_id)
    if origin is None:
        return
    await queue(uow).put(
        f"cancel:{event.order_id}",
        "cancel",
        event.order_id,
        origin[0],
        origin[1],
        {"reason": event.reason},
    )


async def queue_refund(envelope: Envelope, event: RefundIssued, uow: OrderUnitOfWork) -> None:
    """Consumer of our own `refund-issued`: the shop records the refund, once per refund id."""
    origin = await origins(uow).of(event.order_id)
    if origin is None:
        return
    await queue(uow).put(
        f"refund:{event.refund_id}",
        "refund",
        event.order_id,
        origin[0],
        origin[1],
        {
            "refund_id": event.refund_id,
            "amount": format(event.amount, "f"),
            "currency": event.currency,
            "reason": event.reason.value,
        },
    )
