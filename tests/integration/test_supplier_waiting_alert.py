"""Notify pages ops once when order lines wait for a supplier too long."""

from __future__ import annotations

from datetime import UTC, datetime

from services.notify.app import create_app as notify_app
from services.notify.settings import NotifySettings
from shared.events import OrderLinesWaiting, WaitingReason, new_envelope
from shared.testing import eventually
from tests.support.data import API_KEY
from tests.support.kafka import publish_envelopes
from tests.support.services import in_process


async def test_lines_waiting_too_long_raise_one_alert(database_url, settings_for, broker):
    settings = settings_for(
        NotifySettings,
        await database_url("notify"),
        escalation_scan_s=0.2,
        waiting_alert_after_s=1.0,
        order_url="http://127.0.0.1:9",
    )
    async with in_process(notify_app, settings) as notify:
        await notify.runtime.bus.wait_connected()
        waiting = OrderLinesWaiting(
            order_id="ord_wait",
            line_ids=["ord_wait-1"],
            reason=WaitingReason.BREAKER_OPEN,
            since=datetime.now(UTC),
        )
        await publish_envelopes(broker.bootstrap, [new_envelope(waiting), new_envelope(waiting)])

        async def paged():
            items = (await notify.client.get("/v1/alerts", headers=API_KEY)).json()["items"]
            mine = [a for a in items if a["kind"] == "lines_waiting"]
            return mine or None

        [alert] = await eventually(paged, timeout=30, what="the waiting alert")
        assert alert["order_id"] == "ord_wait" and alert["severity"] == "urgent"
        assert "ord_wait-1" in " ".join(alert["details"])
        later = OrderLinesWaiting(
            order_id="ord_late",
            line_ids=["ord_late-1"],
            reason=WaitingReason.TIMEOUT,
            since=datetime.now(UTC),
        )
        await publish_envelopes(broker.bootstrap, [new_envelope(later)])

        async def both():
            found = await paged() or []
            return found if len(found) >= 2 else None

        alerts = await eventually(both, timeout=30, what="the second order's alert")
        assert sorted(a["order_id"] for a in alerts) == ["ord_late", "ord_wait"], "once each"
