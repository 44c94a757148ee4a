"""Marketplace webhooks: which topic means what, and carrying it out once per delivery.

A verified delivery (`MarketplaceWebhook`) is answered `Duplicate` when its id was seen
(from the same shop);
otherwise `decide` turns its topic and payload into an action (create, cancel, redact
or ignore), the action runs in its own unit of work, and only then is the delivery id
recorded, so a delivery that failed half-way is processed again when the marketplace
retries. The effects are idempotent on their own too (one order per shop and external
id, cancelling twice is a no-op), so a retry after a crash is harmless.

Each registered shop's order numbers are its own: two WooCommerce sites may both send
#1001, and they are two orders; creating, cancelling and tombstoning all go by the shop
that sent the delivery (`shop_id`; None for the default, env-secret shop).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from pydantic import ValidationError

from services.order import marketplaces
from services.order.domain import PlaceOrder
from services.order.errors import CannotCancel, InvalidMarketplaceOrder
from services.order.handlers.commands import accept_order, cancel_external, redact_customer
from services.order.schemas import MarketplaceOrderIn
from services.order.store import OrderUnitOfWork

Marketplace = Literal["shopify", "woocommerce"]
_NAMES: dict[Marketplace, str] = {"shopify": "Shopify", "woocommerce": "WooCommerce"}


@dataclass(frozen=True)
class MarketplaceWebhook:
    """One delivery whose signature was verified: its sender, id, topic and JSON body."""

    source: Marketplace
    delivery_id: str
    topic: str
    payload: dict[str, Any]
    shop_id: str | None = None
    """The registered shop that sent it; None: the default (env-secret) shop."""


# -- what a delivery asks for ----------------------------------------------------------
@dataclass(frozen=True)
class CreateOrder:
    order: PlaceOrder


@dataclass(frozen=True)
class CancelOrder:
    channel: Marketplace
    external_id: str
    reason: str
    shop_id: str | None = None


@dataclass(frozen=True)
class RedactCustomer:
    email: str | None
    """None: the compliance request names no e-mail, so no order of ours can be theirs."""


@dataclass(frozen=True)
class Ignore:
    topic: str


Action = CreateOrder | CancelOrder | RedactCustomer | Ignore


# -- what came of it -------------------------------------------------------------------
@dataclass(frozen=True)
class Duplicate:
    """The delivery id was processed before; nothing happened this time."""


@dataclass(frozen=True)
class OrderAccepted:
    order_id: str
    created: bool
    """False: the order existed already (another delivery of the same marketplace order)."""


@dataclass(frozen=True)
class CancelAccepted:
    order_id: str


@dataclass(frozen=True)
class NotCancellable:
    """The marketplace cancelled an order that has shipped: acknowledged, nothing changed."""

    external_id: str


@dataclass(frozen=True)
class UnknownOrder:
    """A cancellation of an order we never received: acknowledged, nothing changed."""

    external_id: str


@dataclass(frozen=True)
class CancelledBeforehand:
    """The order's cancellation arrived before it did: it is not taken (the cancel wins)."""

    external_id: str


@dataclass(frozen=True)
class CustomerRedacted:
    orders: int


@dataclass(frozen=True)
class Ignored:
    topic: str


WebhookOutcome = (
    Duplicate
    | OrderAccepted
    | CancelAccepted
    | NotCancellable
    | UnknownOrder
    | CancelledBeforehand
    | CustomerRedacted
    | Ignored
)


async def handle_marketplace_webhook(
    cmd: MarketplaceWebhook, uow: OrderUnitOfWork
) -> WebhookOutcome:
    """Carry out a delivery once (`InvalidMarketplaceOrder` if its payload is unusable)."""
    async with uow:
        if await uow.webhooks.seen(cmd.source, cmd.shop_id, cmd.delivery_id):
            return Duplicate()
    outcome = await _carry_out(decide(cmd), uow)
    async with uow:
        await uow.webhooks.first_time(cmd.source, cmd.shop_id, cmd.delivery_id, cmd.topic)
        await uow.commit()
    return outcome


def decide(cmd: MarketplaceWebhook) -> Action:
    """The action a delivery's topic and payload ask for; pure, so unit-testable."""
    if cmd.source == "shopify":
        action = _shopify(cmd.topic, cmd.payload)
    else:
        action = _woocommerce(cmd.topic, cmd.payload)
    match action:
        case CreateOrder(order):
            return CreateOrder(replace(order, shop_id=cmd.shop_id))
        case CancelOrder():
            return replace(action, shop_id=cmd.shop_id)
    return action


def _shopify(topic: str, payload: dict[str, Any]) -> Action:
    if topic == "orders/create":
        return CreateOrder(_storefront_order(marketplaces.shopify_new_order(payload), "shopify"))
    if topic == "orders/cancelled":
        return CancelOrder(
            "shopify", marketplaces.shopify_cancelled_id(payload), "cancelled in Shopify"
        )
    if topic == "customers/redact":
        return RedactCustomer(marketplaces.shopify_redact_email(payload))
    return Ignore(topic)


def _woocommerce(topic: str, payload: dict[str, Any]) -> Action:
    # WooCommerce reports a cancellation as an update (or, rarely, a creation) of the
    # order with status "cancelled"
    if topic in ("order.created", "order.updated") and marketplaces.woocommerce_is_cancelled(
        payload
    ):
        return CancelOrder(
            "woocommerce", marketplaces.woocommerce_id(payload), "cancelled in WooCommerce"
        )
    if topic == "order.created":
        return CreateOrder(
            _storefront_order(marketplaces.woocommerce_order(payload), "woocommerce")
        )
    return Ignore(topic)


def _storefront_order(body: dict[str, Any], source: Marketplace) -> PlaceOrder:
    """A mapped marketplace order, held to the rules a storefront order must meet except
    that a missing customer or shipping address is left for intake to hold."""
    lines = body.get("lines")
    external_ids = [
        line.pop("external_ids", None) if isinstance(line, dict) else None
        for line in (lines if isinstance(lines, list) else [])
    ]
    try:
        cmd = MarketplaceOrderIn.model_validate(body).to_command()
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in e["loc"]), "reason": e["msg"]} for e in exc.errors()
        ]
        first = details[0]
        raise InvalidMarketplaceOrder(
            f"{_NAMES[source]} order cannot be accepted: {first['field']}: {first['reason']}",
            details,
        ) from exc
    return replace(
        cmd,
        lines=tuple(
            replace(line, external_ids=None if ids is None else tuple(ids))
            for line, ids in zip(cmd.lines, external_ids, strict=True)
        ),
    )


async def _create(order: PlaceOrder, uow: OrderUnitOfWork) -> WebhookOutcome:
    """Take a marketplace order unless its cancellation came first.

    A create and a cancel racing each other are each checked again after their commit:
    whichever commits second sees the other, so the cancellation always wins.
    """
    channel, shop, external_id = order.channel, order.shop_id, order.external_id or ""
    async with uow:
        if await uow.webhooks.buried(channel, shop, external_id) is not None:
            return CancelledBeforehand(external_id)
    placed = await accept_order(order, uow)
    async with uow:
        reason = await uow.webhooks.buried(channel, shop, external_id)
    if reason is not None:  # the cancellation committed while we took the order
        return await _cancel(channel, shop, external_id, reason, uow)
    return OrderAccepted(placed.order.id, placed.created)


async def _cancel(
    channel: str, shop: str | None, external_id: str, reason: str, uow: OrderUnitOfWork
) -> WebhookOutcome:
    try:
        cancelled = await cancel_external(channel, shop, external_id, reason, uow)
        if cancelled is None:
            async with uow:
                await uow.webhooks.bury(channel, shop, external_id, reason)
                await uow.commit()
            # an order committed meanwhile is cancelled now; a later one finds the tombstone
            cancelled = await cancel_external(channel, shop, external_id, reason, uow)
    except CannotCancel:
        return NotCancellable(external_id)
    if cancelled is None:
        return UnknownOrder(external_id)
    return CancelAccepted(cancelled.id)


async def _carry_out(action: Action, uow: OrderUnitOfWork) -> WebhookOutcome:
    match action:
        case CreateOrder(order):
            return await _create(order, uow)
        case CancelOrder(channel, external_id, reason, shop_id):
            return await _cancel(channel, shop_id, external_id, reason, uow)
        case RedactCustomer(email):
            return CustomerRedacted(await redact_customer(email, uow) if email else 0)
        case Ignore(topic):
            return Ignored(topic)
