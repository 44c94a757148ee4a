"""Supplier service reliability (review finding 11 a, b; finding 8's cancel-before-create):
the SLA scan reaches every order, and a cancellation wins every race with routing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.supplier.app import create_app
from services.supplier.domain import AllocatedLine, State, SupplierOrder
from services.supplier.handlers import dispatch
from services.supplier.settings import SupplierSettings
from shared.infra import free_port
from tests.support.services import served
from tests.support.supplier import ADMIN

pytestmark = pytest.mark.integration


@pytest.fixture
async def quiet(database_url, settings_for, order_contacts):
    """The supplier service with its consumers and clocks left to the test."""
    port = free_port()
    settings = settings_for(
        SupplierSettings,
        await database_url("supplier"),
        port=port,
        order_url=order_contacts.url,
        consumers_enabled=False,
        sla_scan_interval_s=3600,
    )
    async with served(create_app, settings, port) as svc:
        yield svc


async def _supplier(svc) -> str:
    body = {
        "name": "Late",
        "supplier_key": f"late-{uuid.uuid4().hex[:6]}",
        "api_base_url": "https://late.supplier.example",
        "credentials": {"api_key": "late-api-key", "webhook_secret": "late-webhook-secret"},
    }
    created = await svc.client.post("/v1/suppliers", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    return created.json()["id"]


def _accepted(supplier_id: str, accepted_at: datetime, sla_hours: float) -> SupplierOrder:
    order_id = f"ord_{uuid.uuid4().hex[:12]}"
    line = AllocatedLine(
        f"{order_id}-1", "MUG", "SUP-MUG", 1, Decimal("3.00"), Decimal("12.50"), "USD"
    )
    so = SupplierOrder.place(
        f"so_{uuid.uuid4().hex}",
        order_id,
        supplier_id,
        [line],
        now=accepted_at,
        lease_until=accepted_at,
    )
    so.accept("REF", sla_hours, accepted_at)
    so.events.clear()
    return so


async def test_overdue_orders_do_not_starve_the_sla_clock_of_later_ones(quiet):
    svc = quiet
    sid = await _supplier(svc)
    start = datetime.now(UTC)
    # 500 orders already past their deadline (their `major` is due only at twice the
    # window), all with an earlier ship-by than the one order whose `at_risk` comes due
    overdue = [_accepted(sid, start - timedelta(minutes=65), 1.0) for _ in range(500)]
    later = _accepted(sid, start, 1.0)
    async with svc.runtime.uow() as uow:
        await uow.supplier_orders.add_all([*overdue, later])
        await uow.commit()
    assert await dispatch.scan_sla(svc.runtime.uow(), start) == 1000  # at_risk + deadline each

    # 50 minutes later `later` is at risk (75% of its hour), the overdue ones owe nothing
    fired = await dispatch.scan_sla(svc.runtime.uow(), start + timedelta(minutes=50))
    async with svc.runtime.uow() as uow:
        seen = await uow.supplier_orders.get(later.id)
    assert seen is not None and seen.state is State.ACCEPTED
    assert seen.at_risk_sent, "the later order's at_risk never fired: the scan starved it"
    assert fired == 1
