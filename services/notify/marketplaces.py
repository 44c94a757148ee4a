"""Marketplace write-backs that gave up: ops are paged once per failed write-back.

`marketplace-sync-failed` says a shop was not told of a fulfilment, cancellation or refund
after every attempt (or was refused for good): the customer looking at the shop sees the
wrong state until someone acts. The alert's dedupe key is the write-back itself, so a
redelivered event raises nothing more.
"""

from __future__ import annotations

from services.notify.domain import Alert, AlertKind
from services.notify.handlers.alerts import raise_alert
from services.notify.store import NotifyUnitOfWork
from shared.events import Envelope, MarketplaceSyncFailed, Severity

_WHAT = {
    "fulfil": "the shipment (tracking number)",
    "cancel": "the cancellation",
    "refund": "the refund",
}
_PLATFORM = {"shopify": "Shopify", "woocommerce": "WooCommerce"}


async def on_marketplace_sync_failed(
    envelope: Envelope, data: MarketplaceSyncFailed, uow: NotifyUnitOfWork
) -> None:
    await sync_failed(uow, data)


async def sync_failed(uow: NotifyUnitOfWork, data: MarketplaceSyncFailed) -> Alert | None:
    """Urgent: the shop shows the wrong state to the customer until ops fix it by hand."""
    platform = _PLATFORM.get(data.platform, data.platform)
    what = _WHAT.get(data.operation.value, data.operation.value)
    detail = f" {data.tracking_number}" if data.tracking_number else ""
    return await raise_alert(
        uow,
        dedupe_key=(
            f"marketplace-sync:{data.order_id}:{data.operation.value}:"
            f"{data.tracking_number or ''}:{data.failed_at.isoformat()}"
        ),
        kind=AlertKind.MARKETPLACE_SYNC_FAILED,
        severity=Severity.URGENT,
        order_id=data.order_id,
        title=f"{platform} shop {data.shop} was not told of {what} of order {data.order_id}",
        lines=[
            f"Order: {data.order_id} ({platform} order {data.external_id or 'unknown'})",
            f"Shop: {data.shop}",
            f"Write-back: {data.operation.value}{detail}, gave up after {data.attempts} attempt(s)",
            f"Error: {data.error}",
            "The customer sees the old state in the shop. Check the shop's credentials and "
            "API access (PATCH /v1/shops/{id}), then enter it in the shop's admin by hand.",
        ],
    )
