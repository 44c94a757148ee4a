"""Notify reliability (review finding 11 c, e): a dead-letter queue refilled to the same
depth pages again; two notices racing for a customer's last daily slot send one."""

from __future__ import annotations

import pytest

from services.notify.handlers.alerts import DlqReading, record_dlq_depths
from shared.events import ShipmentDispatched
from shared.testing import eventually
from tests.integration.test_notify import confirmed, stack
from tests.support.notify import smtp_server

pytestmark = pytest.mark.integration


async def test_new_dead_letters_page_again_even_at_a_depth_seen_before(
    database_url, settings_for, broker
):
    async with stack(database_url, settings_for, broker, dlq_watch_s=3600) as s:
        uows = s.notify.runtime.uow
        topic = "order-placed.dlq"

        async def watcher_read_once() -> bool:
            async with uows() as uow:
                return topic in await uow.dlq.all()

        # the service's own watcher reads the (empty) queues once at start; let it, so it
        # cannot write its reading between the ones this test makes
        await eventually(watcher_read_once, what="the watcher's first reading")
        assert len(await record_dlq_depths(uows(), {topic: DlqReading(3, 3)})) == 1
        assert await record_dlq_depths(uows(), {topic: DlqReading(3, 3)}) == []
        # retention drops the three old letters; three new ones arrive: the same depth
        assert await record_dlq_depths(uows(), {topic: DlqReading(0, 3)}) == []
        [again] = await record_dlq_depths(uows(), {topic: DlqReading(3, 6)})
        assert again.title == f"3 new dead letter(s) in {topic}"
        # and old letters expiring while new ones arrive leave the depth unchanged
        [more] = await record_dlq_depths(uows(), {topic: DlqReading(3, 8)})
        assert more.title == f"2 new dead letter(s) in {topic}"


async def test_two_notices_racing_for_the_last_daily_slot_send_only_one(
    database_url, settings_for, broker
):
    with smtp_server() as (mailbox, smtp_port):
        mailbox.delay_s = 1.0  # both sends are under way before either is recorded
        async with stack(
            database_url,
            settings_for,
            broker,
            smtp_url=f"smtp://127.0.0.1:{smtp_port}",
            customer_daily_cap=1,
        ) as s:
            first, second = await s.place(), await s.place()  # the same customer
            await s.confirm(confirmed(first, "sup-a"), confirmed(second, "sup-a"))
            await s.publish(
                *(
                    ShipmentDispatched(
                        order_id=order["id"],
                        supplier_id="sup-a",
                        carrier="UPS",
                        tracking_number=f"1Z{n}",
                        line_ids=[order["lines"][0]["line_id"]],
                    )
                    for n, order in enumerate((first, second))
                )
            )

            async def settled() -> list[str] | None:
                rows = [
                    r
                    for order in (first, second)
                    for r in await s.log(order["id"])
                    if r["kind"] == "shipment_dispatched"
                ]
                done = [r["status"] for r in rows if r["status"] in ("sent", "suppressed")]
                return sorted(done) if len(done) == 2 else None

            assert await eventually(settled, timeout=30) == ["sent", "suppressed"]
    assert len(mailbox.raw) == 1
