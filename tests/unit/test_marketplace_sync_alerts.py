"""A write-back that gave up: notify pages ops once on every channel (fake unit of work), and
the order service's error summary carries no e-mail address."""

from __future__ import annotations

from datetime import UTC, datetime

from services.notify.domain import AlertKind
from services.notify.marketplaces import on_marketplace_sync_failed
from services.order.shops.writeback import scrub
from shared.events import MarketplaceSyncFailed, Severity, new_envelope
from tests.unit.test_notify_handlers import FakeUnitOfWork

T0 = datetime(2026, 12, 3, 9, tzinfo=UTC)


def failed(**changes: object) -> MarketplaceSyncFailed:
    values: dict[str, object] = {
        "order_id": "ord_1",
        "platform": "woocommerce",
        "shop": "woo.maple-and-pine.example",
        "operation": "refund",
        "external_id": "4827",
        "attempts": 8,
        "error": "refund: HTTP 403",
        "failed_at": T0,
    }
    return MarketplaceSyncFailed.model_validate(values | changes)


async def test_ops_hear_once_of_a_write_back_that_gave_up_on_every_channel() -> None:
    uow = FakeUnitOfWork()
    event = failed()
    await on_marketplace_sync_failed(new_envelope(event), event, uow)
    await on_marketplace_sync_failed(new_envelope(event), event, uow)  # redelivered
    [alert] = uow.alerts.rows.values()
    assert (alert.kind, alert.severity, alert.order_id) == (
        AlertKind.MARKETPLACE_SYNC_FAILED,
        Severity.URGENT,
        "ord_1",
    )
    assert alert.title == (
        "WooCommerce shop woo.maple-and-pine.example was not told of the refund of order ord_1"
    )
    assert "Error: refund: HTTP 403" in alert.lines
    assert sorted(q["target"] for q in uow.notifications.queued) == ["cn-ops", "slack-0"]

    other = failed(operation="fulfil", tracking_number="1Z1", failed_at=T0.replace(minute=5))
    await on_marketplace_sync_failed(new_envelope(other), other, uow)
    assert len(uow.alerts.rows) == 2


def test_the_error_summary_names_no_email_address() -> None:
    said = "fulfillmentCreate: customer emily.carter@example.com has no address"
    assert scrub(said) == "fulfillmentCreate: customer <email> has no address"
    assert len(scrub("x" * 900)) == 500
    assert scrub("") == "unknown error"
