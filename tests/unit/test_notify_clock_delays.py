"""Notify on the new clocks' delays: who hears of not_accepted_in_time and lost_in_transit."""

from __future__ import annotations

import pytest

from services.notify.domain import AlertKind, Kind
from services.notify.handlers.events import on_shipment_delayed
from shared.events import DelayReason, Severity, ShipmentDelayed, new_envelope
from tests.unit.test_notify import render
from tests.unit.test_notify_handlers import FakeUnitOfWork


class FakeOrders:
    async def share_lines(self, order_id: str, supplier_id: str) -> list[str]:
        return [f"{order_id}-1"]


async def delayed(reason: DelayReason) -> FakeUnitOfWork:
    uow = FakeUnitOfWork()
    uow.orders = FakeOrders()  # type: ignore[attr-defined]
    event = ShipmentDelayed(
        order_id="ord_1", supplier_id="sup_a", reason=reason, severity=Severity.URGENT
    )
    await on_shipment_delayed(new_envelope(event), event, uow)  # type: ignore[arg-type]
    return uow


async def test_not_accepted_in_time_alerts_ops_and_tells_the_customer_nothing():
    uow = await delayed(DelayReason.NOT_ACCEPTED_IN_TIME)
    [alert] = uow.alerts.rows.values()
    assert alert.kind is AlertKind.SHIPMENT_DELAYED and alert.severity is Severity.URGENT
    assert "not accepted by a supplier in time" in alert.title
    assert {q["target"] for q in uow.notifications.queued} == {"slack-0", "cn-ops"}


async def test_a_lost_parcel_alerts_ops_and_tells_the_customer():
    uow = await delayed(DelayReason.LOST_IN_TRANSIT)
    [alert] = uow.alerts.rows.values()
    assert "lost in transit" in alert.title and alert.severity is Severity.URGENT
    customer = [q for q in uow.notifications.queued if q["target"] == "customer"]
    assert [q["reason"] for q in customer] == ["lost_in_transit"]


@pytest.mark.parametrize(
    ("locale", "subject", "body"),
    [("en", "We are tracing your order #1042", "opened a trace"),
     ("zh-CN", "我们正在追查您的订单 #1042", "发起查件")],
)  # fmt: skip
def test_the_lost_parcel_notice_reads_in_the_customers_language(locale, subject, body):
    out = render(Kind.SHIPMENT_DELAYED, locale, reason="lost_in_transit")
    assert out.subject == subject
    assert body in out.text and body in out.sms
