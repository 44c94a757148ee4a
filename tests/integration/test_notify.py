"""Notify service against real parts: the order service over HTTP, aiosmtpd, webhook sinks,
the broker, and both databases."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.header import decode_header
from typing import Any

import pytest

from services.notify.app import create_app as notify_app
from services.notify.handlers.alerts import escalate_overdue
from services.notify.settings import NotifySettings
from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from shared.crypto import generate_key
from shared.events import (
    ConfirmedLine,
    EventData,
    OrderRoutingFailed,
    RoutingFailureReason,
    Severity,
    ShipmentDelayed,
    ShipmentDispatched,
    SupplierAvailability,
    SupplierConfirmed,
    SupplierStatusChanged,
    new_envelope,
)
from shared.infra import free_port
from shared.testing import eventually
from tests.support.data import API_KEY, order_body
from tests.support.kafka import consume, publish_envelopes, publish_raw
from tests.support.notify import log_of, settled, smtp_server, until, webhook_sink
from tests.support.services import InProcessService, ServedApp, in_process, served

ZH = {"name": "张三", "email": "zhang@example.com", "locale": "zh-CN"}


@dataclass
class Stack:
    order: ServedApp
    notify: InProcessService
    bootstrap: str

    async def place(self, customer: dict[str, Any] | None = None, **body: Any) -> dict[str, Any]:
        request = order_body(customer=customer or ZH, **body)
        response = await self.order.client.post("/v1/orders", json=request, headers=API_KEY)
        assert response.status_code == 201, response.text
        order = response.json()
        await eventually(lambda: self._known(order["id"]), what="order-placed consumed by notify")
        return dict(order)

    async def _known(self, order_id: str) -> bool:
        async with self.notify.runtime.uow() as uow:
            return await uow.orders.get(order_id) is not None

    async def publish(self, *events: EventData, copies: int = 1) -> None:
        envelopes = [new_envelope(e) for e in events]
        await publish_envelopes(self.bootstrap, [e for e in envelopes for _ in range(copies)])

    async def confirm(self, *events: SupplierConfirmed) -> None:
        """Publish confirmations and wait until notify knows which lines each supplier has."""
        await self.publish(*events)

        async def known() -> bool:
            async with self.notify.runtime.uow() as uow:
                for e in events:
                    if not await uow.orders.share_lines(e.order_id, e.supplier_id):
                        return False
            return True

        await eventually(known, what="supplier-confirmed consumed by notify")

    async def log(self, order_id: str | None = None, **params: Any) -> list[dict[str, Any]]:
        return await log_of(self.notify.client, order_id, **params)


def confirmed(order: dict[str, Any], supplier: str, line_index: int = 0) -> SupplierConfirmed:
    line = order["lines"][line_index]
    return SupplierConfirmed(
        order_id=order["id"],
        supplier_id=supplier,
        supplier_order_ref=f"so-{supplier}",
        lines=[ConfirmedLine(line_id=line["line_id"], quantity=line["quantity"], unit_cost="3.00")],
        currency="USD",
        ship_by=datetime.now(UTC) + timedelta(hours=1),
    )


def delayed(
    order_id: str, supplier: str, reason: str = "no_tracking_by_deadline", severity: str = "urgent"
) -> ShipmentDelayed:
    return ShipmentDelayed(
        order_id=order_id,
        supplier_id=supplier,
        reason=reason,
        severity=Severity(severity),
        expected_by=datetime(2026, 11, 30, 12, tzinfo=UTC),
    )


FAST = {
    "digest_window_s": 0.3,
    "sender_poll_s": 0.2,
    "send_backoff_s": 0.1,
    "send_backoff_max_s": 0.5,
    "escalation_scan_s": 0.2,
    "dlq_watch_s": 0.3,
}
"""Notify settings that make a test's clock run in fractions of a second."""


@contextlib.asynccontextmanager
async def stack(
    database_url: Any,
    settings_for: Any,
    broker: Any,
    *,
    order_port: int | None = None,
    pii_key: str | None = None,
    **notify: Any,
) -> AsyncIterator[Stack]:
    order_port = order_port or free_port()
    order_settings = settings_for(
        OrderSettings,
        await database_url("order"),
        port=order_port,
        consumers_enabled=False,
        pii_key=pii_key or generate_key(),
    )
    values: dict[str, Any] = {**FAST, "order_url": f"http://127.0.0.1:{order_port}", **notify}
    notify_settings = settings_for(NotifySettings, await database_url("notify"), **values)
    async with (
        served(order_app, order_settings, order_port) as order,
        in_process(notify_app, notify_settings) as svc,
    ):
        await svc.runtime.bus.wait_connected()
        yield Stack(order, svc, broker.bootstrap)


def decoded_subject(raw: bytes) -> tuple[str, str]:
    """(the raw Subject header as sent, its decoded text)."""
    header = next(
        line
        for line in raw.split(b"\r\n\r\n")[0].decode("ascii").replace("\r\n ", " ").split("\r\n")
        if line.startswith("Subject:")
    )
    value = header.removeprefix("Subject:").strip()
    text = "".join(
        part.decode(charset or "ascii") if isinstance(part, bytes) else part
        for part, charset in decode_header(value)
    )
    return value, text


async def test_a_chinese_customer_gets_one_chinese_email_however_often_the_delay_arrives(
    database_url, settings_for, broker
):
    with smtp_server() as (mailbox, smtp_port):
        async with stack(
            database_url, settings_for, broker, smtp_url=f"smtp://127.0.0.1:{smtp_port}"
        ) as s:
            order = await s.place(external_id="SHOP-1042")
            await s.confirm(confirmed(order, "sup-a"))
            # the same event five times, and a second event meaning the same thing
            await s.publish(delayed(order["id"], "sup-a"), copies=5)
            await s.publish(delayed(order["id"], "sup-a"))
            rows = await eventually(lambda: settled(s.notify.client, order["id"], 1), what="sent")
            sent = await consume(s.bootstrap, "notification-sent", 1)

    assert len(mailbox.raw) == 1
    assert [r["status"] for r in rows] == ["sent"]
    assert rows[0]["template"] == "shipment_delayed@zh-CN" and rows[0]["attempts"] == 1
    raw_subject, subject = decoded_subject(mailbox.raw[0])
    assert raw_subject.lower().startswith("=?utf-8?")  # RFC 2047, not raw UTF-8 bytes
    assert subject == "非常抱歉，您的订单 SHOP-1042 发货延迟"
    message = mailbox.messages[0]
    assert mailbox.recipients == [["zhang@example.com"]]
    assert message["Content-Language"] == "zh-CN"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "张三，您好" in text and "2026年11月30日" in text and "MUG-1 × 2" in text
    assert "SHOP-1042" in html and "<html" in html
    event = json.loads(sent[0].value)
    assert event["data"] == {
        "order_id": order["id"],
        "kind": "shipment_delayed",
        "channel": "email",
        "recipient_kind": "customer",
        "status": "sent",
    }


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_smtp_down_for_a_while_then_up_the_email_arrives_once(
    database_url, settings_for, broker
):
    smtp_port = free_port()  # nothing listens here yet
    async with stack(
        database_url, settings_for, broker, smtp_url=f"smtp://127.0.0.1:{smtp_port}"
    ) as s:
        order = await s.place(customer={"name": "Ann", "email": "ann@example.com"})
        await s.publish(delayed(order["id"], "sup-a", "carrier_exception", "normal"))

        async def failing_twice() -> list[dict[str, Any]]:
            rows = await s.log(order["id"])
            return rows if rows and rows[0]["attempts"] >= 2 and rows[0]["last_error"] else []

        rows = await eventually(failing_twice, what="failed attempts while SMTP is down")
        assert rows[0]["status"] in ("pending", "sending")
        assert "SMTP unavailable" in rows[0]["last_error"]
        with smtp_server(smtp_port) as (mailbox, _):
            rows = await eventually(lambda: settled(s.notify.client, order["id"], 1))
        assert len(mailbox.raw) == 1
        assert rows[0]["status"] == "sent" and rows[0]["attempts"] >= 2
        _, subject = decoded_subject(mailbox.raw[0])
        assert subject == "A delivery problem with your order " + order["id"]


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_contact_lookup_failing_then_recovering(database_url, settings_for, broker):
    order_port = free_port()
    order_settings = settings_for(
        OrderSettings,
        await database_url("order"),
        port=order_port,
        consumers_enabled=False,
        pii_key=generate_key(),
    )
    with smtp_server() as (mailbox, smtp_port):
        settings = settings_for(
            NotifySettings,
            await database_url("notify"),
            **{**FAST, "order_url": f"http://127.0.0.1:{order_port}"},
            smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        )
        async with in_process(notify_app, settings) as svc:
            await svc.runtime.bus.wait_connected()
            async with served(order_app, order_settings, order_port) as order:
                s = Stack(order, svc, broker.bootstrap)
                placed = await s.place(customer={"name": "Ann", "email": "ann@example.com"})
            # the order service is down now: the notice must wait for it, not be lost
            await s.publish(delayed(placed["id"], "sup-a"))

            async def failing() -> list[dict[str, Any]]:
                rows = await s.log(placed["id"])
                return rows if rows and rows[0]["attempts"] >= 2 else []

            rows = await eventually(failing, what="contact lookup failing")
            assert "order service unreachable" in rows[0]["last_error"]
            assert rows[0]["status"] in ("pending", "sending") and mailbox.raw == []
            async with served(order_app, order_settings, order_port):
                rows = await eventually(lambda: settled(svc.client, placed["id"], 1))
    assert [r["status"] for r in rows] == ["sent"]
    assert len(mailbox.raw) == 1 and mailbox.recipients == [["ann@example.com"]]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_redacted_customer_gets_no_further_notices(database_url, settings_for, broker):
    with smtp_server() as (mailbox, smtp_port):
        async with stack(
            database_url, settings_for, broker, smtp_url=f"smtp://127.0.0.1:{smtp_port}"
        ) as s:
            order = await s.place()
            await s.publish(delayed(order["id"], "sup-a", "at_risk", "normal"))
            await eventually(lambda: settled(s.notify.client, order["id"], 1))
            assert len(mailbox.raw) == 1
            erased = await s.order.client.post(
                "/v1/customers/redact", json={"email": ZH["email"]}, headers=API_KEY
            )
            assert erased.json() == {"redacted": 1}
            await s.publish(delayed(order["id"], "sup-a"))
            rows = await eventually(lambda: settled(s.notify.client, order["id"], 2))
    assert len(mailbox.raw) == 1
    later = [r for r in rows if r["reason"] == "no_tracking_by_deadline"]
    assert [(r["status"], r["last_error"]) for r in later] == [("skipped", "customer_redacted")]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_delayed_lines_are_digested_sms_goes_out_and_the_daily_cap_holds(
    database_url, settings_for, broker
):
    async with webhook_sink() as sink:
        with smtp_server() as (mailbox, smtp_port):
            async with stack(
                database_url,
                settings_for,
                broker,
                smtp_url=f"smtp://127.0.0.1:{smtp_port}",
                sms_webhook_url=sink.endpoint("sms"),
                customer_daily_cap=2,
                digest_window_s=1.0,
            ) as s:
                customer = {"name": "Ann", "email": "ann@example.com", "phone": "+15551234567"}
                order = await s.place(
                    customer=customer,
                    lines=[
                        {"sku": "MUG-1", "quantity": 2, "unit_price": "12.50"},
                        {"sku": "LAMP-3", "quantity": 1, "unit_price": "40.00"},
                    ],
                )
                await s.confirm(confirmed(order, "sup-a", 0), confirmed(order, "sup-b", 1))
                # both suppliers late within the digest window: one message lists both lines
                await s.publish(delayed(order["id"], "sup-a"), delayed(order["id"], "sup-b"))
                rows = await eventually(lambda: settled(s.notify.client, order["id"], 2))
                assert sorted((r["channel"], r["status"]) for r in rows) == [
                    ("email", "sent"),
                    ("sms", "sent"),
                ]
                assert len(mailbox.raw) == 1
                text = mailbox.messages[0].get_body(("plain",)).get_content()
                assert "2 × MUG-1" in text and "1 × LAMP-3" in text
                assert [h.body["to"] for h in sink.of("sms")] == ["+15551234567"]
                assert "late" in sink.of("sms")[0].body["text"]
                # two more notices: the second notice today is allowed, the third is capped
                for n in (1, 2):
                    await s.publish(
                        ShipmentDispatched(
                            order_id=order["id"],
                            supplier_id="sup-a",
                            carrier="UPS",
                            tracking_number=f"1Z{n}",
                            line_ids=[order["lines"][0]["line_id"]],
                        )
                    )
                    rows = await eventually(
                        lambda n=n: settled(s.notify.client, order["id"], 2 + 2 * n)
                    )
    dispatched = sorted(
        (r["reason"], r["channel"], r["status"]) for r in rows if r["kind"] == "shipment_dispatched"
    )
    assert dispatched == [
        ("1Z1", "email", "sent"),
        ("1Z1", "sms", "sent"),
        ("1Z2", "email", "suppressed"),
        ("1Z2", "sms", "suppressed"),
    ]
    assert len(mailbox.raw) == 2


OPS_SECRETS = {"dingtalk": "SECdingtalk-secret", "feishu": "feishu-secret", "generic": "g-secret"}


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_ops_alerts_are_signed_retried_escalated_and_acknowledged(
    database_url, settings_for, broker
):
    async with webhook_sink(OPS_SECRETS) as sink:
        hooks = [
            {"kind": "slack", "url": sink.endpoint("slack")},
            {
                "kind": "dingtalk",
                "url": sink.endpoint("dingtalk"),
                "secret": OPS_SECRETS["dingtalk"],
            },
            {"kind": "wecom", "url": sink.endpoint("wecom")},
            {"kind": "feishu", "url": sink.endpoint("feishu"), "secret": OPS_SECRETS["feishu"]},
            {
                "kind": "generic",
                "url": sink.endpoint("generic"),
                "secret": OPS_SECRETS["generic"],
                "name": "pager",
            },
        ]
        sink.script["slack"] = [(429, {"Retry-After": "1"})]
        sink.script["wecom"] = [(400, {})]  # a bad robot key: retrying cannot help
        async with stack(
            database_url,
            settings_for,
            broker,
            ops_webhooks=json.dumps(hooks),
        ) as s:
            order = await s.place()
            failed = OrderRoutingFailed(
                order_id=order["id"],
                line_ids=[order["lines"][0]["line_id"]],
                reason=RoutingFailureReason.OUT_OF_STOCK,
            )
            await s.publish(failed, copies=3)
            ops = await eventually(
                lambda: settled(s.notify.client, None, 6), what="customer notice + 5 alert sends"
            )
            ops = [r for r in ops if r["recipient_kind"] == "ops"]
            assert sorted((r["target"], r["status"]) for r in ops) == [
                ("dingtalk-1", "sent"),
                ("feishu-3", "sent"),
                ("pager", "sent"),
                ("slack-0", "sent"),
                ("wecom-2", "dead"),
            ]
            slack = sink.of("slack")
            assert len(slack) == 2 and slack[1].at - slack[0].at >= 1.0  # waited Retry-After
            wecom = next(r for r in ops if r["target"] == "wecom-2")
            assert wecom["attempts"] == 1 and "HTTP 400" in wecom["last_error"]
            for kind in ("dingtalk", "feishu", "generic"):
                assert [h.signature_ok for h in sink.of(kind)] == [True], kind
            assert "URGENT" in sink.of("dingtalk")[0].body["markdown"]["title"]
            assert order["id"] in sink.of("feishu")[0].body["content"]["text"]

            alerts = (await s.notify.client.get("/v1/alerts", headers=API_KEY)).json()["items"]
            assert len(alerts) == 1 and alerts[0]["severity"] == "urgent"
            alert_id = alerts[0]["id"]

            # nobody acknowledges within the urgent target: once it passed, the scan re-fires
            # the alert as major (run here at a clock past the target, so that the checks
            # above cannot race an escalation on a slow machine)
            past_target = datetime.now(UTC) + timedelta(hours=5)  # the urgent target: 4 h
            assert await escalate_overdue(s.notify.runtime.uow(), past_target) == 1

            async def escalated() -> bool:
                return len(sink.of("generic")) == 2

            await eventually(escalated, what="escalation after the response target")
            assert sink.of("generic")[1].body["severity"] == "major"
            assert sink.of("generic")[1].body["escalations"] == 1

            ack = await s.notify.client.post(
                f"/v1/alerts/{alert_id}/ack", json={"by": "li.wei"}, headers=API_KEY
            )
            assert ack.status_code == 200 and ack.json()["acked_by"] == "li.wei"
            again = await s.notify.client.post(f"/v1/alerts/{alert_id}/ack", headers=API_KEY)
            assert again.json()["acked_by"] == "li.wei"  # the first acknowledgement stands
            # an acknowledged alert never escalates again, however late it gets
            late = datetime.now(UTC) + timedelta(days=2)
            assert await escalate_overdue(s.notify.runtime.uow(), late) == 0

            dead = await s.notify.client.post(
                f"/v1/notifications/{wecom['id']}/retry", headers=API_KEY
            )
            assert dead.status_code == 200 and dead.json()["status"] == "pending"
            sent = await s.notify.client.post(
                f"/v1/notifications/{ops[0]['id']}/retry", headers=API_KEY
            )
            assert sent.status_code == 409 and sent.json()["error"]["code"] == "not_dead"

            async def resent() -> bool:
                row = await s.notify.client.get(f"/v1/notifications/{wecom['id']}", headers=API_KEY)
                return bool(row.json()["status"] == "sent")

            await eventually(resent, what="manual retry sent")


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_growing_dead_letter_queue_pages_ops(database_url, settings_for, broker):
    async with webhook_sink() as sink:
        hooks = [{"kind": "generic", "url": sink.endpoint("generic")}]
        async with stack(database_url, settings_for, broker, ops_webhooks=json.dumps(hooks)) as s:
            await publish_raw(s.bootstrap, "order-placed.dlq", [b"poison-1", b"poison-2"])

            def reported() -> int:
                """Dead letters the alerts so far announced (a reading may fall between two)."""
                titles = [h.body["title"] for h in sink.of("generic")]
                assert all(t.endswith("new dead letter(s) in order-placed.dlq") for t in titles)
                return sum(int(t.split()[0]) for t in titles)

            await until(lambda: reported() == 2, what="DLQ alert")
            alert = sink.of("generic")[0].body
            assert alert["kind"] == "dlq_growth" and alert["severity"] == "urgent"
            before = len(sink.of("generic"))
            await publish_raw(s.bootstrap, "order-placed.dlq", [b"poison-3"])
            await until(lambda: reported() == 3, what="second DLQ alert")
            assert len(sink.of("generic")) == before + 1


def supplier_status(status: str, at: datetime, reason: str = "breaker_open") -> EventData:
    return SupplierStatusChanged(
        supplier_id="sup-a", status=SupplierAvailability(status), reason=reason, changed_at=at
    )


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_supplier_becoming_unavailable_pages_ops_once_per_outage(
    database_url, settings_for, broker
):
    async with webhook_sink() as sink:
        hooks = [{"kind": "slack", "url": sink.endpoint("slack")}]
        async with stack(database_url, settings_for, broker, ops_webhooks=json.dumps(hooks)) as s:
            start = datetime.now(UTC)
            # the same event delivered three times, then a second report of the same outage
            await s.publish(supplier_status("unavailable", start), copies=3)
            await s.publish(supplier_status("unavailable", start + timedelta(seconds=1)))
            await until(lambda: len(sink.of("slack")) == 1, what="supplier outage alert")
            assert "Supplier sup-a is failing" in sink.of("slack")[0].body["text"]
            # it recovers, then fails again: a new outage, a new alert. One supplier's
            # events share a partition, so the duplicates above were consumed before these.
            await s.publish(
                supplier_status("available", start + timedelta(seconds=2), reason="recovered"),
                supplier_status("unavailable", start + timedelta(seconds=3)),
            )
            await until(lambda: len(sink.of("slack")) == 2, what="second outage alert")
            alerts = (await s.notify.client.get("/v1/alerts", headers=API_KEY)).json()["items"]
            assert [a["kind"] for a in alerts] == ["supplier_breaker_open"] * 2

            async def both_sent() -> list[str] | None:
                # an alert's webhook can arrive before its "sent" outcome is committed
                statuses = [r["status"] for r in await s.log(None, recipient_kind="ops")]
                return statuses if statuses == ["sent", "sent"] else None

            assert await eventually(both_sent, what="both alerts logged as sent") == [
                "sent",
                "sent",
            ]


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_notify_api_rejects_bad_input_by_name(database_url, settings_for, broker):
    async with stack(database_url, settings_for, broker, consumers_enabled=False) as s:
        c = s.notify.client
        zh = await c.get("/v1/templates/shipment_delayed/preview", params={"locale": "zh_CN"})
        assert zh.status_code == 200 and zh.json()["locale"] == "zh-CN"
        assert "发货延迟" in zh.json()["subject"]
        fallback = await c.get("/v1/templates/order_cancelled/preview", params={"locale": "fr-FR"})
        assert fallback.json()["locale"] == "en"
        page = await c.get("/v1/templates/shipment_dispatched/preview", params={"format": "html"})
        assert (
            page.headers["content-type"].startswith("text/html")
            and "1Z999AA10123456784" in page.text
        )
        bad_kind = await c.get("/v1/templates/invoice/preview")
        assert bad_kind.status_code == 422
        assert bad_kind.json()["error"]["details"][0]["field"] == "path.kind"
        bad_locale = await c.get("/v1/templates/order_cancelled/preview", params={"locale": "<x>"})
        assert bad_locale.status_code == 422
        assert (await c.get("/v1/notifications")).status_code == 401
        bad_cursor = await c.get("/v1/notifications", params={"cursor": "nope"}, headers=API_KEY)
        assert bad_cursor.status_code == 422
        assert bad_cursor.json()["error"]["details"][0]["field"] == "query.cursor"
        bad_status = await c.get("/v1/notifications", params={"status": "lost"}, headers=API_KEY)
        assert bad_status.status_code == 422
        assert (await c.post("/v1/alerts/nope/ack", headers=API_KEY)).status_code == 404
        assert (await c.post("/v1/notifications/nope/retry", headers=API_KEY)).status_code == 404
        extra = await c.post("/v1/alerts/nope/ack", json={"by": "x", "extra": 1}, headers=API_KEY)
        assert extra.status_code == 422
