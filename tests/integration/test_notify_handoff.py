"""A notice queued by an event goes to the sender in memory, claimed in the transaction
that queued it: no claim transaction, no poll to wait for, and still sent exactly once
when the process dies between the commit and the hand-off, or when replicas share work.

Real parts: the order service over HTTP (contacts), the notify service, the broker,
aiosmtpd, both databases.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from services.notify.app import create_app as notify_app
from services.notify.handlers.events import on_shipment_delayed, on_shipment_dispatched
from services.notify.repository import Notifications
from services.notify.settings import NotifySettings
from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from shared.crypto import generate_key
from shared.events import ShipmentDispatched, new_envelope
from shared.infra import free_port
from shared.testing import eventually
from tests.integration.test_notify import FAST, delayed
from tests.support.data import API_KEY, order_body
from tests.support.kafka import publish_envelopes
from tests.support.notify import Mailbox, log_of, settled, smtp_server
from tests.support.services import InProcessService, ServedApp, in_process, served, service_process


class Claims:
    """Every `claim_due` of the sender: how many sends each took."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.taken: list[int] = []
        original = Notifications.claim_due

        async def counted(repo: Notifications, *args: Any) -> Any:
            got = await original(repo, *args)
            self.taken.append(len(got))
            return got

        monkeypatch.setattr(Notifications, "claim_due", counted)


def dispatched(order: dict[str, Any], n: int = 0) -> ShipmentDispatched:
    return ShipmentDispatched(
        order_id=order["id"],
        supplier_id="sup-a",
        carrier="UPS",
        tracking_number=f"1Z{n:04d}",
        line_ids=[order["lines"][0]["line_id"]],
    )


class Rig:
    def __init__(self, order: ServedApp, mailbox: Mailbox, bootstrap: str) -> None:
        self.order, self.mailbox, self.bootstrap = order, mailbox, bootstrap
        self.notify: list[InProcessService] = []

    async def place(self, count: int) -> list[dict[str, Any]]:
        orders = []
        for i in range(count):
            customer = {"name": f"Customer {i}", "email": f"c{i}@example.com", "locale": "en"}
            body = order_body(customer=customer)
            response = await self.order.client.post("/v1/orders", json=body, headers=API_KEY)
            assert response.status_code == 201, response.text
            orders.append(response.json())
        return orders

    async def settled(self, orders: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        rows = {}
        for order in orders:
            found = await log_of(self.notify[0].client, order["id"])
            if len(found) != 1 or found[0]["status"] in ("pending", "sending"):
                return {}
            rows[order["id"]] = found[0]
        return rows


@contextlib.asynccontextmanager
async def rig(
    database_url: Any, settings_for: Any, broker: Any, replicas: int = 1, **overrides: Any
) -> AsyncIterator[Rig]:
    order_port = free_port()
    order_settings = settings_for(
        OrderSettings,
        await database_url("order"),
        port=order_port,
        consumers_enabled=False,
        pii_key=generate_key(),
    )
    with smtp_server() as (mailbox, smtp_port):
        values = {
            **FAST,
            "order_url": f"http://127.0.0.1:{order_port}",
            "smtp_url": f"smtp://127.0.0.1:{smtp_port}",
            "customer_daily_cap": 50,
            **overrides,
        }
        notify_url = await database_url("notify")
        async with (
            served(order_app, order_settings, order_port) as order,
            contextlib.AsyncExitStack() as services,
        ):
            r = Rig(order, mailbox, broker.bootstrap)
            for _ in range(replicas):
                settings = settings_for(NotifySettings, notify_url, **values)
                svc = await services.enter_async_context(in_process(notify_app, settings))
                await svc.runtime.bus.wait_connected()
                r.notify.append(svc)
            yield r


async def test_a_notice_queued_by_an_event_is_sent_without_a_claim_or_a_poll(
    database_url, settings_for, broker, monkeypatch
):
    claims = Claims(monkeypatch)
    async with rig(database_url, settings_for, broker, sender_poll_s=3600.0) as r:
        (order,) = await r.place(1)
        await eventually(lambda: _true(bool(claims.taken)), what="the sender's start-up claim")
        start = len(claims.taken)
        await publish_envelopes(r.bootstrap, [new_envelope(dispatched(order))])
        rows = await eventually(lambda: r.settled([order]), timeout=20, what="the notice sent")
        assert claims.taken[start:] == [], "handed over in memory, not claimed"
    row = rows[order["id"]]
    assert row["status"] == "sent" and row["attempts"] == 1
    assert r.mailbox.recipients == [["c0@example.com"]]


async def test_with_the_hand_off_off_the_sender_claims_and_sends_it(
    database_url, settings_for, broker, monkeypatch
):
    claims = Claims(monkeypatch)
    values = {"sender_poll_s": 3600.0, "send_handoff": False}
    async with rig(database_url, settings_for, broker, **values) as r:
        (order,) = await r.place(1)
        await eventually(lambda: _true(bool(claims.taken)), what="the sender's start-up claim")
        start = len(claims.taken)
        await publish_envelopes(r.bootstrap, [new_envelope(dispatched(order))])
        rows = await eventually(lambda: r.settled([order]), timeout=20, what="the notice sent")
        assert claims.taken[start:] == [1], "claimed by the sender, woken by the commit"
    assert rows[order["id"]]["status"] == "sent" and rows[order["id"]]["attempts"] == 1
    assert len(r.mailbox.raw) == 1


async def test_outcomes_of_sends_finishing_together_share_transactions(
    database_url, settings_for, broker
):
    """Ten notices queued together and sent together: their cap checks and their
    outcomes are written in a few transactions, not one or two per send."""
    sends = 10
    values = {
        "sender_poll_s": 3600.0,
        "outcome_linger_ms": 300,
        # nothing else commits on notify's database meanwhile
        "relay_enabled": False,
        "escalation_scan_s": 3600.0,
        "dlq_watch_s": 3600.0,
        "hold_scan_s": 3600.0,
    }
    async with rig(database_url, settings_for, broker, **values) as r:
        orders = await r.place(sends)
        svc = r.notify[0]
        commits: list[int] = []
        await asyncio.sleep(0.5)  # the start-up claim and the consumer's first polls are done
        listener = lambda *_: commits.append(1)  # noqa: E731
        event.listen(svc.runtime.engine.sync_engine, "commit", listener)
        try:
            async with svc.runtime.uow() as uow:
                for n, order in enumerate(orders):
                    e = dispatched(order, n)
                    await on_shipment_dispatched(new_envelope(e), e, uow)
                await uow.commit()
            rows = await eventually(lambda: r.settled(orders), timeout=30, what="ten sent")
        finally:
            event.remove(svc.runtime.engine.sync_engine, "commit", listener)
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert len(r.mailbox.raw) == sends
    # after the queueing commit: the cap checks of sends handed together in one
    # transaction, their outcomes in another (4 here, 21 before: a claim, then a cap
    # transaction and an outcome transaction per send)
    after_queueing = len(commits) - 1
    assert after_queueing < sends, f"{after_queueing} commits for {sends} sends"


async def test_a_notice_claimed_as_queued_still_gathers_the_parts_of_its_transaction(
    database_url, settings_for, broker
):
    """No digest window: two suppliers' delays of one order, queued in one transaction, are
    one e-mail listing both (the second part joins the row the first claimed)."""
    async with rig(database_url, settings_for, broker, digest_window_s=0.0) as r:
        (order,) = await r.place(1)
        svc = r.notify[0]
        async with svc.runtime.uow() as uow:
            for supplier in ("sup-a", "sup-b"):
                e = delayed(order["id"], supplier, "at_risk", "normal")
                await on_shipment_delayed(new_envelope(e), e, uow)
            await uow.commit()
        rows = await eventually(lambda: r.settled([order]), timeout=20, what="the notice sent")
        async with svc.runtime.uow() as uow:
            sent = await uow.notifications.get(rows[order["id"]]["id"])
    assert sent is not None and sent.status.value == "sent"
    assert [p["supplier_id"] for p in sent.details["parts"]] == ["sup-a", "sup-b"]
    assert len(r.mailbox.raw) == 1


async def test_two_replicas_send_every_notice_once(database_url, settings_for, broker):
    count = 12
    async with rig(database_url, settings_for, broker, replicas=2, sender_concurrency=4) as r:
        orders = await r.place(count)
        # half through the consumers (partitions split between the replicas), half queued
        # by each replica's own transactions
        await publish_envelopes(
            r.bootstrap, [new_envelope(dispatched(o, n)) for n, o in enumerate(orders[:6])]
        )
        for i, order in enumerate(orders[6:], start=6):
            svc = r.notify[i % 2]
            async with svc.runtime.uow() as uow:
                e = dispatched(order, i)
                await on_shipment_dispatched(new_envelope(e), e, uow)
                await uow.commit()
        rows = await eventually(lambda: r.settled(orders), timeout=40, what="all sent")
        await asyncio.sleep(0.5)  # a second copy would have gone out by now
    assert {row["status"] for row in rows.values()} == {"sent"}
    assert {row["attempts"] for row in rows.values()} == {1}
    assert sorted(rcpt for rcpts in r.mailbox.recipients for rcpt in rcpts) == sorted(
        f"c{i}@example.com" for i in range(count)
    )


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
async def test_killed_after_the_commit_before_the_hand_off_the_notice_goes_once(
    database_url, settings_for, broker, tmp_path
):
    """The row is claimed and committed, the process dies before its sender gets it: the
    lease runs out and a sender (here the restarted process) claims and sends it once."""
    order_port = free_port()
    order_settings = settings_for(
        OrderSettings,
        await database_url("order"),
        port=order_port,
        consumers_enabled=False,
        pii_key=generate_key(),
    )
    with smtp_server() as (mailbox, smtp_port):
        env = {
            "DROPSHIP_ENVIRONMENT": "test",
            "DROPSHIP_NOTIFY_DATABASE_URL": await database_url("notify"),
            "DROPSHIP_KAFKA_BOOTSTRAP": broker.bootstrap,
            "DROPSHIP_DATA_DIR": str(tmp_path),
            "DROPSHIP_SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
            "DROPSHIP_ORDER_URL": f"http://127.0.0.1:{order_port}",
            "DROPSHIP_SENDER_POLL_S": "0.2",
            "DROPSHIP_SEND_LEASE_S": "2",
        }
        notify = service_process("notify", env, tmp_path)
        notify.start(extra_env={"DROPSHIP_FAULT_POINTS": "notify.before_handoff"})
        try:
            async with served(order_app, order_settings, order_port) as order:
                placed = await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)
                body = placed.json()
                await publish_envelopes(broker.bootstrap, [new_envelope(dispatched(body))])
                # in a thread: the order service answers from this test's event loop
                assert await asyncio.to_thread(notify.wait_exit, 60) == 137, notify.log_tail()
                assert mailbox.raw == []
                await asyncio.to_thread(notify.start)  # without the failpoint
                async with httpx.AsyncClient(base_url=notify.url, timeout=10) as client:
                    rows = await eventually(lambda: settled(client, body["id"], 1), timeout=60)
                    await asyncio.sleep(1.0)
                    assert len(await log_of(client, body["id"])) == 1
        finally:
            notify.stop()
    assert [r["status"] for r in rows] == ["sent"]
    assert rows[0]["attempts"] == 2  # the hand-off's claim, then the claim after the lease
    assert len(mailbox.raw) == 1


async def _true(value: bool) -> bool:
    return value
