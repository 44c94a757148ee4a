"""Ops hear about a hold that stands too long, once per hold, never about a released one."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from services.notify.app import create_app
from services.notify.holds import alert_old_holds
from services.notify.settings import NotifySettings
from services.notify.tables import order_hold
from shared.events import HoldReason, OrderHeld, OrderReleased, new_envelope
from shared.testing import eventually
from tests.support.data import API_KEY
from tests.support.kafka import publish_envelopes
from tests.support.notify import until, webhook_sink
from tests.support.services import in_process


async def test_a_hold_older_than_the_limit_pages_ops_once(database_url, settings_for, broker):
    async with webhook_sink() as sink:
        settings = settings_for(
            NotifySettings,
            await database_url("notify"),
            ops_webhooks=json.dumps([{"kind": "generic", "url": sink.endpoint("generic")}]),
            order_url="http://127.0.0.1:9",
            hold_alert_after_s=60,
            hold_scan_s=0.1,
            sender_poll_s=0.1,
            escalation_scan_s=0.2,
        )
        async with in_process(create_app, settings) as notify:
            await notify.runtime.bus.wait_connected()
            now = datetime.now(UTC)
            released = [
                new_envelope(OrderHeld(order_id="ord_b", reason=HoldReason.MANUAL, held_at=now)),
                new_envelope(OrderReleased(order_id="ord_b", released_at=now)),
            ]
            await publish_envelopes(broker.bootstrap, released)

            async def b_released() -> bool:
                async with notify.runtime.uow() as uow:
                    row = (
                        await uow.session.execute(
                            select(order_hold.c.released_at).where(order_hold.c.order_id == "ord_b")
                        )
                    ).first()
                return row is not None and row.released_at is not None

            await eventually(b_released, what="ord_b's release consumed")
            held = OrderHeld(
                order_id="ord_a",
                reason=HoldReason.ADDRESS_INVALID,
                note="shipping_address.region: required",
                held_at=datetime.now(UTC) - timedelta(hours=1),  # over the limit already
            )
            await publish_envelopes(broker.bootstrap, [new_envelope(held)])
            await publish_envelopes(broker.bootstrap, [new_envelope(held)])  # told twice

            await until(lambda: len(sink.of("generic")) >= 1, what="hold alert")
            alert = sink.of("generic")[0].body
            assert alert["kind"] == "order_held"
            assert "ord_a" in alert["title"] and "address_invalid" in alert["title"]
            alerts = (await notify.client.get("/v1/alerts", headers=API_KEY)).json()["items"]
            assert [(a["kind"], a["order_id"]) for a in alerts] == [("order_held", "ord_a")]
            # once every hold is over the limit: ord_a was paged already, ord_b was released
            assert await alert_old_holds(notify.runtime.uow(), timedelta(0)) == 0
