"""After-sales over the real broker: return and refund e-mails (aiosmtpd, the order service's
contact endpoint, both languages, once however often delivered) and complaint alerts that
escalate until responded and fire when the resolution target passes."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from services.notify.app import create_app
from services.notify.handlers.alerts import escalate_overdue
from services.notify.handlers.complaints import resolution_missed
from services.notify.settings import NotifySettings
from shared.events import (
    ComplaintFiled,
    ComplaintResolved,
    ComplaintResponded,
    ComplaintTier,
    CostBearer,
    EventData,
    RefundIssued,
    RefundLine,
    ReturnAuthorized,
    ReturnLine,
    ReturnReason,
    ReturnRejected,
    ReturnRequested,
    new_envelope,
)
from shared.testing import eventually
from tests.integration.test_notify import FAST, ZH, decoded_subject, settled, stack
from tests.support.data import API_KEY
from tests.support.kafka import consume, publish_envelopes
from tests.support.notify import smtp_server, until, webhook_sink
from tests.support.services import in_process

DAMAGED = ReturnReason.DAMAGED_IN_TRANSIT


def returned(order: dict[str, Any], return_id: str) -> list[ReturnLine]:
    line = order["lines"][0]
    return [ReturnLine(line_id=line["line_id"], sku=line["sku"], quantity=1, supplier_id="sup-a")]


def authorized(order: dict[str, Any], return_id: str) -> ReturnAuthorized:
    return ReturnAuthorized(
        order_id=order["id"],
        return_id=return_id,
        supplier_id="sup-a",
        reason=DAMAGED,
        lines=returned(order, return_id),
        rma=f"RMA-{return_id}",
        return_address="Returns, 88 Harbour Rd, Shenzhen 518000",
        authorized_at=datetime.now(UTC),
    )


def refunded(order: dict[str, Any], refund_id: str, amount: str) -> RefundIssued:
    return RefundIssued(
        order_id=order["id"],
        refund_id=refund_id,
        amount=amount,
        currency="USD",
        reason=DAMAGED,
        lines=[RefundLine(line_id=order["lines"][0]["line_id"], quantity=1)],
        cost_bearer=CostBearer.SUPPLIER,
        supplier_id="sup-a",
        channel="storefront",
        issued_at=datetime.now(UTC),
    )


def bodies(mailbox: Any) -> dict[str, str]:
    """Decoded subject -> plain-text body of every e-mail received."""
    out = {}
    for raw, message in zip(mailbox.raw, mailbox.messages, strict=True):
        out[decoded_subject(raw)[1]] = message.get_body(("plain",)).get_content()
    return out


async def test_return_and_refund_emails_in_both_languages_each_sent_once(
    database_url, settings_for, broker
):
    with smtp_server() as (mailbox, smtp_port):
        async with stack(
            database_url, settings_for, broker, smtp_url=f"smtp://127.0.0.1:{smtp_port}"
        ) as s:
            zh = await s.place(customer=ZH, external_id="SHOP-7")
            en = await s.place(customer={"name": "Ann Lee", "email": "ann@example.com"})
            requested = ReturnRequested(
                order_id=zh["id"],
                return_id="ret_1",
                reason=DAMAGED,
                lines=returned(zh, "ret_1"),
                requested_at=datetime.now(UTC),
            )
            rejected = ReturnRejected(
                order_id=zh["id"],
                return_id="ret_2",
                note="超过30天退货期",
                rejected_at=datetime.now(UTC),
            )
            # every fact told three times over, and once more in a fresh envelope
            events: list[EventData] = [
                requested,
                authorized(zh, "ret_1"),
                rejected,
                refunded(zh, "rf_1", "6.25"),
                authorized(en, "ret_3"),
                refunded(en, "rf_2", "1234.5"),
            ]
            await s.publish(*events, copies=3)
            await s.publish(*events)
            zh_rows = await eventually(lambda: settled(s.notify.client, zh["id"], 4), what="zh")
            en_rows = await eventually(lambda: settled(s.notify.client, en["id"], 2), what="en")
            sent = await consume(s.bootstrap, "notification-sent", 6)

    assert sorted(r["template"] for r in zh_rows) == [
        "refund_issued@zh-CN",
        "return_authorized@zh-CN",
        "return_rejected@zh-CN",
        "return_requested@zh-CN",
    ]
    assert sorted(r["template"] for r in en_rows) == ["refund_issued@en", "return_authorized@en"]
    assert all(r["status"] == "sent" and r["attempts"] == 1 for r in zh_rows + en_rows)
    assert len(mailbox.raw) == 6  # once each, however often delivered
    mails = bodies(mailbox)
    authorised_zh = mails["您对订单 SHOP-7 的退货已批准：RMA RMA-ret_1"]
    assert "张三，您好" in authorised_zh and "RMA-ret_1" in authorised_zh
    assert "88 Harbour Rd, Shenzhen 518000" in authorised_zh and "MUG-1 × 1" in authorised_zh
    assert "运输途中损坏" in authorised_zh
    assert "原因：超过30天退货期" in mails["关于您对订单 SHOP-7 的退货申请"]
    assert "退款 US$6.25" in mails["订单 SHOP-7 已退款 US$6.25"]
    assert "我们已收到您对订单 SHOP-7 的退货申请" in mails
    authorised_en = mails[f"Your return for order {en['id']} is approved: RMA RMA-ret_3"]
    assert "Dear Ann Lee," in authorised_en and "1 × MUG-1" in authorised_en
    assert "We have refunded $1,234.50" in mails[f"Your refund of $1,234.50 for order {en['id']}"]
    kinds = sorted(json.loads(m.value)["data"]["kind"] for m in sent)
    assert kinds == sorted(
        [
            *("return_requested", "return_authorized", "return_rejected"),
            *("return_authorized", "refund_issued", "refund_issued"),
        ]
    )


def filed(complaint_id: str, tier: ComplaintTier, respond_in: float, resolve_in: float) -> Any:
    now = datetime.now(UTC)
    return ComplaintFiled(
        order_id=f"ord_{complaint_id}",
        complaint_id=complaint_id,
        tier=tier,
        respond_by=now + timedelta(seconds=respond_in),
        resolve_by=now + timedelta(seconds=resolve_in),
        filed_at=now,
    )


async def alerts_of(client: Any) -> list[dict[str, Any]]:
    return list((await client.get("/v1/alerts", headers=API_KEY)).json()["items"])


def ops_settings(settings_for: Any, url: str, sink: Any, **extra: Any) -> NotifySettings:
    hooks = [{"kind": "generic", "url": sink.endpoint("generic")}]
    return settings_for(  # type: ignore[no-any-return]
        NotifySettings,
        url,
        **{**FAST, "order_url": "http://127.0.0.1:9", "ops_webhooks": json.dumps(hooks), **extra},
    )


async def test_an_unanswered_major_complaint_escalates_until_responded(
    database_url, settings_for, broker
):
    async with webhook_sink() as sink:
        settings = ops_settings(
            settings_for, await database_url("notify"), sink, alert_target_major_s=0.4
        )
        async with in_process(create_app, settings) as notify:
            await notify.runtime.bus.wait_connected()
            complaint = filed("cmp_major", ComplaintTier.MAJOR, respond_in=1.0, resolve_in=3600)
            envelope = new_envelope(complaint)
            await publish_envelopes(broker.bootstrap, [envelope, envelope])  # redelivered
            await publish_envelopes(broker.bootstrap, [new_envelope(complaint)])

            await until(lambda: len(sink.of("generic")) >= 1, what="complaint alert")
            # (respond_by may pass before the filing is consumed: the first send and the
            # first escalation then leave together, in either order)
            await until(
                lambda: any(h.body["escalations"] == 0 for h in sink.of("generic")),
                what="the alert as first raised",
            )
            first = next(h.body for h in sink.of("generic") if h.body["escalations"] == 0)
            assert first["kind"] == "complaint_response" and first["severity"] == "major"
            assert first["escalations"] == 0 and "cmp_major" in first["title"]
            assert first["order_id"] == "ord_cmp_major"
            assert "Complaint: cmp_major" in first["text"] and "Tier: major" in first["text"]
            # no response by respond_by: it re-fires, and again at the major target
            await until(lambda: len(sink.of("generic")) >= 3, what="two escalations")
            assert sorted(h.body["escalations"] for h in sink.of("generic"))[:3] == [0, 1, 2]
            assert {h.body["severity"] for h in sink.of("generic")} == {"major"}

            responded = ComplaintResponded(
                order_id=complaint.order_id,
                complaint_id="cmp_major",
                tier=ComplaintTier.MAJOR,
                by="li.wei",
                filed_at=complaint.filed_at,
                responded_at=datetime.now(UTC),
            )
            await publish_envelopes(broker.bootstrap, [new_envelope(responded)])

            async def acknowledged() -> list[dict[str, Any]]:
                found = await alerts_of(notify.client)
                return found if all(a["acked_by"] == "li.wei" for a in found) else []

            alerts = await eventually(acknowledged, what="responded complaint acknowledged")
            assert [a["kind"] for a in alerts] == ["complaint_response"]  # one, however told
            late = datetime.now(UTC) + timedelta(days=2)
            assert await escalate_overdue(notify.runtime.uow(), late) == 0


async def test_the_resolution_target_alerts_unless_resolved(database_url, settings_for, broker):
    async with webhook_sink() as sink:
        settings = ops_settings(settings_for, await database_url("notify"), sink)
        async with in_process(create_app, settings) as notify:
            await notify.runtime.bus.wait_connected()
            late = filed("cmp_late", ComplaintTier.NORMAL, respond_in=3600, resolve_in=0.5)
            done = filed("cmp_done", ComplaintTier.URGENT, respond_in=3600, resolve_in=3600)
            answered = filed("cmp_answered", ComplaintTier.NORMAL, respond_in=3600, resolve_in=3600)
            resolved = ComplaintResolved(
                order_id=done.order_id,
                complaint_id="cmp_done",
                tier=ComplaintTier.URGENT,
                by="ops.ann",
                filed_at=done.filed_at,
                resolved_at=datetime.now(UTC),
            )
            response = ComplaintResponded(
                order_id=answered.order_id,
                complaint_id="cmp_answered",
                tier=ComplaintTier.NORMAL,
                by="ops.ann",
                filed_at=answered.filed_at,
                responded_at=datetime.now(UTC),
            )
            # the response is consumed before its filing (they travel on different topics)
            await publish_envelopes(broker.bootstrap, [new_envelope(response)])

            async def response_known() -> bool:
                async with notify.runtime.uow() as uow:
                    return (await uow.complaints.lock("cmp_answered")).responded_at is not None

            await eventually(response_known, what="response consumed")
            await publish_envelopes(
                broker.bootstrap, [new_envelope(e) for e in (late, done, answered)]
            )

            async def raised(count: int) -> list[dict[str, Any]]:
                found = await alerts_of(notify.client)
                return found if len(found) >= count else []

            # cmp_late and cmp_done are answered by a response alert, cmp_late then misses
            # its resolution target; cmp_answered had its answer already
            await eventually(lambda: raised(3), what="response and resolution alerts")
            await publish_envelopes(broker.bootstrap, [new_envelope(resolved)])

            async def done_acknowledged() -> list[dict[str, Any]]:
                found = await alerts_of(notify.client)
                done_alerts = [a for a in found if a["order_id"] == done.order_id]
                return found if done_alerts and done_alerts[0]["acked_by"] == "ops.ann" else []

            alerts = await eventually(done_acknowledged, what="resolved complaint acknowledged")
            # however late it gets, the resolved one never misses its target (the answered
            # but unresolved one does, once)
            long_after = datetime.now(UTC) + timedelta(days=3)
            missed = await resolution_missed(notify.runtime.uow(), long_after)
            assert [a.order_id for a in missed] == [answered.order_id]
            assert await resolution_missed(notify.runtime.uow(), long_after) == []

    by_kind = sorted((a["kind"], a["order_id"], a["severity"]) for a in alerts)
    assert by_kind == [
        ("complaint_response", "ord_cmp_done", "urgent"),
        ("complaint_response", "ord_cmp_late", "normal"),
        ("complaint_unresolved", "ord_cmp_late", "normal"),
    ]
    unresolved = next(a for a in alerts if a["kind"] == "complaint_unresolved")
    assert "missed its resolution target" in unresolved["title"]
    assert "Complaint: cmp_late" in unresolved["details"]
