"""Notify rules, templates, signing and configuration, without I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest
from pydantic import ValidationError

from services.notify.channels import (
    AlertMessage,
    SmtpMailer,
    dingtalk_sign,
    feishu_sign,
    generic_signature,
    retry_after_seconds,
    scrub,
)
from services.notify.domain import Kind, RetryPolicy, escalate, normalise_locale, sms_worthy
from services.notify.mime import build_email
from services.notify.rendering import SAMPLES, Renderer
from services.notify.settings import NotifySettings
from shared.events import Severity


def render(kind: Kind, locale: str | None, **extra: object):
    context = {"merchant": "Shop", "support_email": "help@shop.example", "order_ref": "#1042"}
    return Renderer().render(kind, locale, {**context, **SAMPLES[kind], **extra})


@pytest.mark.parametrize(
    ("given", "chosen"),
    [
        ("zh-CN", "zh-CN"),
        ("zh_CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh-Hans", "zh-CN"),
        ("en-GB", "en"),
        ("fr", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_locale_falls_back_to_english(given, chosen):
    assert normalise_locale(given) == chosen


@pytest.mark.parametrize("kind", list(Kind))
@pytest.mark.parametrize("locale", ["en", "zh-CN"])
def test_every_kind_renders_in_every_locale_naming_the_order(kind, locale):
    out = render(kind, locale)
    assert out.locale == locale
    for part in (out.subject, out.text, out.html, out.sms):
        assert "#1042" in part
    assert "\n" not in out.subject and out.html.startswith("<!doctype html>")


def test_delay_notices_say_what_happened_and_what_happens_next():
    late = render(Kind.SHIPMENT_DELAYED, "en", reason="no_tracking_by_deadline")
    assert "(Tuesday 24 November 2026)" in late.text and "refund you in full" in late.text
    at_risk = render(Kind.SHIPMENT_DELAYED, "en", reason="at_risk")
    assert at_risk.subject == "An update on your order #1042"
    assert "still expect it to ship by Tuesday 24 November 2026" in at_risk.text
    backorder = render(Kind.SHIPMENT_DELAYED, "zh-CN", reason="supplier_backorder")
    assert "暂时缺货" in backorder.subject and "2026年11月24日" in backorder.text


def test_html_is_escaped_and_text_is_not():
    out = render(Kind.ORDER_CANCELLED, "en", order_ref="<b>#1&2</b>", customer_name="A & B")
    assert "&lt;b&gt;#1&amp;2&lt;/b&gt;" in out.html and "<b>#1" not in out.html
    assert "Dear A & B," in out.text and "<b>#1&2</b>" in out.subject


def test_routing_failure_notice_says_whether_the_rest_ships():
    part = render(Kind.ORDER_ROUTING_FAILED, "en", all_lines=False)
    assert "The rest of your order is not affected" in part.text
    whole = render(Kind.ORDER_ROUTING_FAILED, "en", all_lines=True)
    assert "The rest of your order" not in whole.text and "this order" in whole.text


def test_email_subject_and_name_are_rfc2047_encoded_and_parse_back():
    message = build_email(
        render(Kind.SHIPMENT_DISPATCHED, "zh-CN"),
        to_email="zhang@example.com",
        to_name="张三",
        mail_from="Shop <orders@shop.example>",
        message_id="n-1",
        domain="shop.example",
    )
    raw = bytes(message)
    assert raw.partition(b"\r\n\r\n")[0].isascii(), "every header is ASCII"
    parsed = message_from_bytes(raw, policy=policy.default)
    assert parsed["Subject"] == "您的订单 #1042 已发货"
    assert parsed["To"].addresses[0].display_name == "张三"
    assert parsed["Message-ID"] == "<n-1@shop.example>"
    assert parsed.get_content_type() == "multipart/alternative"


def test_sms_only_for_notices_that_warrant_one():
    assert sms_worthy(Kind.SHIPMENT_DELAYED, "no_tracking_by_deadline")
    assert not sms_worthy(Kind.SHIPMENT_DELAYED, "at_risk")
    assert sms_worthy(Kind.SHIPMENT_DISPATCHED, "1Z999")
    assert not sms_worthy(Kind.ORDER_CANCELLED, "")


def test_escalation_climbs_the_tiers_and_stays_at_major():
    assert escalate(Severity.NORMAL) is Severity.URGENT
    assert escalate(Severity.URGENT) is Severity.MAJOR
    assert escalate(Severity.MAJOR) is Severity.MAJOR


def test_retry_backoff_grows_respects_retry_after_and_gives_up():
    policy_ = RetryPolicy(
        max_attempts=4, initial=timedelta(seconds=1), maximum=timedelta(seconds=3)
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    delays = [(policy_.next_attempt(now, n) - now).total_seconds() for n in (1, 2, 3)]  # type: ignore[operator]
    assert 0.5 <= delays[0] <= 1 and 1 <= delays[1] <= 2 and 1.5 <= delays[2] <= 3
    after = policy_.next_attempt(now, 1, retry_after=30)
    assert after == now + timedelta(seconds=30)
    assert policy_.next_attempt(now, 4) is None


def test_retry_after_as_seconds_or_http_date():
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds("Mon, 23 Nov 2026 12:00:30 GMT", now) == 30
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_errors_are_scrubbed_of_addresses_and_numbers():
    text = scrub("550 5.1.1 <ann.lee+shop@example.co.uk> unknown; call +1 (555) 123-4567")
    assert "ann" not in text and "555" not in text and "<email>" in text and "<phone>" in text


def test_dingtalk_and_feishu_signatures_follow_their_documented_examples():
    # DingTalk: HmacSHA256 keyed with the secret over "timestamp\nsecret", then base64
    expected = base64.b64encode(
        hmac.new(b"SECabc", b"1700000000000\nSECabc", hashlib.sha256).digest()
    ).decode()
    assert dingtalk_sign("SECabc", 1700000000000) == expected
    # Feishu: HmacSHA256 keyed with "timestamp\nsecret" over an empty message, then base64
    expected = base64.b64encode(hmac.new(b"1700000000\nabc", b"", hashlib.sha256).digest()).decode()
    assert feishu_sign("abc", 1700000000) == expected
    assert generic_signature("k", 1, b"{}") == (
        "t=1,v1=" + hmac.new(b"k", b"1.{}", hashlib.sha256).hexdigest()
    )


def test_alert_text_says_severity_escalation_and_how_to_ack():
    alert = AlertMessage(
        alert_id="a1",
        kind="routing_failed",
        severity="major",
        title="Order X could not be routed",
        lines=["Reason: out_of_stock"],
        order_id="X",
        escalations=2,
        ack_url="http://notify/v1/alerts/a1/ack",
        raised_at="2026-11-23T00:00:00+00:00",
    )
    assert alert.heading.endswith("[MAJOR] Order X could not be routed (escalated x2)")
    assert "POST http://notify/v1/alerts/a1/ack" in alert.plain()


@pytest.mark.parametrize(
    ("url", "tls", "starttls", "port", "user", "verify"),
    [
        ("smtp://mail:2525", False, False, 2525, None, True),
        ("smtp+starttls://u%40x:p%3Aw@mail", False, True, 587, "u@x", True),
        ("smtps://mail?verify=false", True, False, 465, None, False),
    ],
)
def test_smtp_url_forms(url, tls, starttls, port, user, verify):
    mailer = SmtpMailer.from_url(url)
    c = mailer.config
    assert (c.use_tls, c.start_tls, c.port, c.username, c.verify) == (
        tls,
        starttls,
        port,
        user,
        verify,
    )
    assert "p:w" not in repr(mailer)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"smtp_url": "imap://mail"}, "DROPSHIP_SMTP_URL must start with"),
        ({"ops_webhooks": "[{"}, "DROPSHIP_OPS_WEBHOOKS is not JSON"),
        ({"ops_webhooks": '[{"kind": "teams", "url": "http://x"}]'}, "kind"),
        ({"ops_webhooks": '[{"kind": "slack", "url": "ftp://x"}]'}, "must be an http(s) URL"),
        (
            {
                "ops_webhooks": '[{"kind": "slack", "url": "http://a", "name": "ops"},'
                '{"kind": "wecom", "url": "http://b", "name": "ops"}]'
            },
            "names must be unique",
        ),
    ],
)
def test_bad_configuration_is_refused_at_start_naming_the_variable(env, needle, tmp_path):
    with pytest.raises(ValidationError) as info:
        NotifySettings(data_dir=tmp_path, **env)
    assert needle in str(info.value)


def test_ops_channels_get_stable_names(tmp_path):
    settings = NotifySettings(
        data_dir=tmp_path,
        ops_webhooks='[{"kind": "slack", "url": "http://a"},'
        '{"kind": "feishu", "url": "http://b", "name": "cn-ops"}]',
    )
    assert [(h.kind, h.name) for h in settings.ops_channels] == [
        ("slack", "slack-0"),
        ("feishu", "cn-ops"),
    ]
