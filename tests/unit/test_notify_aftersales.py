"""After-sales notices and complaint clocks without I/O: money per locale, templates, watches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.notify.aftersales_text import format_money
from services.notify.domain import ComplaintWatch, Kind
from services.notify.rendering import SAMPLES, Renderer
from shared.events import Severity

T0 = datetime(2026, 12, 3, 9, tzinfo=UTC)


def render(kind: Kind, locale: str, **extra: object):
    context = {"merchant": "Shop", "support_email": "help@shop.example", "order_ref": "#1042"}
    return Renderer().render(kind, locale, {**context, **SAMPLES[kind], **extra})


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "shown"),
    [
        ("1234.5", "USD", "en", "$1,234.50"),
        ("1234.5", "USD", "zh-CN", "US$1,234.50"),
        ("88", "CNY", "zh-CN", "¥88.00"),
        ("88", "CNY", "en", "CN¥88.00"),
        ("1200", "JPY", "en", "¥1,200"),
        ("12", "CHF", "en", "CHF 12.00"),
        ("10.005", "USD", "en", "$10.005"),  # exact: never rounded to a cent not paid
        ("0.10", "EUR", "zh-CN", "€0.10"),
    ],
)
def test_money_is_shown_the_way_the_customer_reads_it_and_exactly(amount, currency, locale, shown):
    assert format_money(amount, currency, locale) == shown


def test_return_instructions_carry_the_rma_the_address_and_the_lines_in_both_languages():
    en = render(Kind.RETURN_AUTHORIZED, "en", rma="RMA-77", return_address="88 Harbour Rd")
    assert "RMA-77" in en.subject and "RMA-77" in en.text and "88 Harbour Rd" in en.text
    assert "1 × MUG-1" in en.text and "damaged in transit" in en.text
    assert "RMA-77" in en.html and "88 Harbour Rd" in en.html
    zh = render(Kind.RETURN_AUTHORIZED, "zh-CN", rma="RMA-77", return_address="深圳市港湾路88号")
    assert "退货已批准" in zh.subject and "RMA-77" in zh.text and "深圳市港湾路88号" in zh.text
    assert "运输途中损坏" in zh.text and "MUG-1 × 1" in zh.text


def test_a_rejected_return_says_why_and_the_note_is_escaped_in_html():
    out = render(Kind.RETURN_REJECTED, "en", note="Bought <40> days ago & used")
    assert "Why: Bought <40> days ago & used" in out.text
    assert "Bought &lt;40&gt; days ago &amp; used" in out.html
    zh = render(Kind.RETURN_REJECTED, "zh-CN", note="已超过30天")
    assert "原因：已超过30天" in zh.text


def test_a_refund_notice_shows_the_exact_amount_in_the_locale():
    en = render(Kind.REFUND_ISSUED, "en", amount="19.9", currency="USD")
    assert en.subject == "Your refund of $19.90 for order #1042" and "$19.90" in en.text
    zh = render(Kind.REFUND_ISSUED, "zh-CN", amount="19.9", currency="USD")
    assert zh.subject == "订单 #1042 已退款 US$19.90" and "US$19.90" in zh.html


def test_a_return_request_is_acknowledged_without_instructions_yet():
    out = render(Kind.RETURN_REQUESTED, "en")
    assert "do not send anything back until then" in out.text
    assert "退货申请" in render(Kind.RETURN_REQUESTED, "zh-CN").subject


def test_a_complaint_answered_before_its_filing_arrived_awaits_no_response():
    watch = ComplaintWatch("cmp_1")
    watch.respond(T0)
    watch.file("ord_1", Severity.MAJOR, T0, T0 + timedelta(hours=1), T0 + timedelta(hours=48))
    assert not watch.awaiting_response
    fresh = ComplaintWatch("cmp_2")
    fresh.file("ord_1", Severity.URGENT, T0, T0 + timedelta(hours=4), T0 + timedelta(hours=48))
    assert fresh.awaiting_response


def test_the_resolution_target_is_missed_once_and_never_when_resolved():
    watch = ComplaintWatch("cmp_1")
    watch.file("ord_1", Severity.NORMAL, T0, T0 + timedelta(hours=24), T0 + timedelta(hours=48))
    assert not watch.resolution_missed(T0 + timedelta(hours=47))
    assert watch.resolution_missed(T0 + timedelta(hours=48))
    watch.resolution_alerted_at = T0 + timedelta(hours=48)
    assert not watch.resolution_missed(T0 + timedelta(hours=50))
    resolved = ComplaintWatch("cmp_2")
    resolved.file("ord_1", Severity.NORMAL, T0, T0 + timedelta(hours=24), T0 + timedelta(hours=48))
    resolved.resolve(T0 + timedelta(hours=30))
    assert not resolved.resolution_missed(T0 + timedelta(hours=49))
    assert not resolved.awaiting_response
