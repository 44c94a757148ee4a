"""The notice e-mail as bytes (`services.notify.mime`), read back by the standard library's
parser the way a mail client would read it."""

from __future__ import annotations

from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import cast

import pytest

from services.notify.mime import MAX_LINE, OutgoingEmail, build_email
from services.notify.rendering import Rendered

TEXT = "Hello Zoë,\nyour order #1042 is on its way.\n\n— Café Shop\n"
HTML = "<!doctype html>\n<p>Hello Zoë,</p>\n<p>your order <b>#1042</b> is on its way.</p>\n"


def email(
    *,
    subject: str = "Your order #1042 is on its way",
    text: str = TEXT,
    html: str = HTML,
    to_name: str | None = "Zoë Ångström",
    mail_from: str = "Café Shop <orders@shop.example>",
) -> OutgoingEmail:
    return build_email(
        Rendered(locale="en", subject=subject, text=text, html=html, sms=""),
        to_email="zoe@example.com",
        to_name=to_name,
        mail_from=mail_from,
        message_id="n-1",
        domain="shop.example",
    )


def parse(raw: bytes) -> EmailMessage:
    return cast(EmailMessage, message_from_bytes(raw, policy=policy.default))


def lines(part: EmailMessage | None) -> list[str]:
    assert part is not None
    return str(part.get_content()).splitlines()


@pytest.mark.parametrize("eight_bit", [True, False], ids=["8bitmime", "7-bit server"])
def test_both_parts_read_back_as_written(eight_bit):
    raw = email().as_bytes(eight_bit=eight_bit)
    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    assert lines(message.get_body(("plain",))) == TEXT.splitlines()
    assert lines(message.get_body(("html",))) == HTML.splitlines()
    assert message["Content-Language"] == "en"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Message-ID"] == "<n-1@shop.example>"
    assert message["Date"].datetime.tzinfo is not None
    if not eight_bit:
        assert raw.isascii(), "a server without 8BITMIME gets 7-bit bytes only"
    assert b"\n" not in raw.replace(b"\r\n", b""), "every line ends in CRLF"


def test_names_with_non_ascii_text_or_specials_read_back():
    message = parse(bytes(email(to_name='Doe, "JD" (work)')))
    assert message["To"].addresses[0].display_name == 'Doe, "JD" (work)'
    assert message["To"].addresses[0].addr_spec == "zoe@example.com"
    assert message["From"].addresses[0].display_name == "Café Shop"
    assert message["From"].addresses[0].addr_spec == "orders@shop.example"
    assert email(to_name=None).head.count("To: zoe@example.com\r\n") == 1


def test_a_long_subject_is_folded_and_reads_back_whole():
    subject = "Votre commande n° 1042 — " + "très " * 40
    out = email(subject=subject)
    assert all(len(line) <= 78 for line in out.head.split("\r\n"))
    assert parse(bytes(out))["Subject"] == subject


def test_a_line_break_in_a_value_cannot_add_a_header():
    message = parse(bytes(email(subject="Hi\r\nBcc: thief@evil.example", to_name="A\nCc: x@y.z")))
    assert message["Bcc"] is None and message["Cc"] is None
    assert message["Subject"] == "Hi Bcc: thief@evil.example"


def test_a_line_longer_than_smtp_allows_goes_as_base64():
    html = "<p>" + "x" * (MAX_LINE + 10) + "</p>\n"
    raw = bytes(email(html=html))
    assert all(len(line) <= MAX_LINE for line in raw.split(b"\r\n"))
    assert lines(parse(raw).get_body(("html",))) == html.splitlines()


def test_the_envelope_and_utf8_need():
    out = email()
    assert (out.sender, out.recipients, out.utf8) == (
        "orders@shop.example",
        ("zoe@example.com",),
        False,
    )
    assert "zoe@example.com" not in repr(out), "personal data stays out of logs"
