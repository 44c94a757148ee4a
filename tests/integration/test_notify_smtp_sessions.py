"""SMTP sessions kept open between sends, against a real aiosmtpd server: reuse, and one
message's failure never spilling into the next."""

from __future__ import annotations

from typing import Any

import pytest

from services.notify.channels import PermanentSendError, SmtpMailer, TransientSendError
from services.notify.mime import OutgoingEmail, build_email
from services.notify.rendering import Rendered
from tests.support.notify import Mailbox, smtp_server


class Picky(Mailbox):
    """Refuses the recipient `nobody@...` for good, takes everyone else."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("nobody@"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


def mail(to: str, n: int, name: str | None = None) -> OutgoingEmail:
    text = f"body {n}: Grüße"
    return build_email(
        Rendered(locale="de", subject=f"notice {n}", text=text, html=f"<p>{text}</p>", sms=""),
        to_email=to,
        to_name=name,
        mail_from="Shop <orders@shop.example>",
        message_id=f"n-{n}",
        domain="shop.example",
    )


async def test_sends_share_a_session_and_a_refused_one_costs_only_itself():
    with smtp_server() as (box, port):
        box.__class__ = Picky
        mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{port}")
        try:
            for n in range(3):
                await mailer.send(mail(f"c{n}@example.com", n), f"n-{n}")
            assert mailer.sessions.opened == 1, "three e-mails, one session"
            with pytest.raises(PermanentSendError):
                await mailer.send(mail("nobody@example.com", 3), "n-3")
            await mailer.send(mail("c4@example.com", 4), "n-4")
        finally:
            await mailer.close()
        assert mailer.sessions.opened == 2, "the failed session was closed, a fresh one opened"
        assert box.recipients == [[f"c{n}@example.com"] for n in (0, 1, 2, 4)], "each once"


async def test_a_server_gone_and_back_between_sends_loses_nothing():
    with smtp_server() as (box, port):
        mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{port}")
        await mailer.send(mail("c0@example.com", 0), "n-0")
    with pytest.raises(TransientSendError):  # down: the sender retries later
        await mailer.send(mail("c1@example.com", 1), "n-1")
    with smtp_server(port) as (again, _):
        try:
            await mailer.send(mail("c1@example.com", 1), "n-1")  # the retry, on a new session
        finally:
            await mailer.close()
    assert box.recipients == [["c0@example.com"]] and again.recipients == [["c1@example.com"]]


async def test_an_address_in_utf8_goes_to_a_server_with_smtputf8_and_parses_back():
    with smtp_server() as (box, port):  # aiosmtpd offers SMTPUTF8
        mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{port}")
        try:
            await mailer.send(mail("zoë@exämple.com", 0, name="Zoë Ångström"), "n-0")
        finally:
            await mailer.close()
    assert box.recipients == [["zoë@exämple.com"]]
    message = box.messages[0]
    assert message["To"].addresses[0].display_name == "Zoë Ångström"
    assert "<zoë@exämple.com>\r\n".encode() in box.raw[0]  # UTF-8 as it is (RFC 6532)
    assert message.get_body(("plain",)).get_content().splitlines() == ["body 0: Grüße"]


async def test_an_address_in_utf8_is_not_sent_to_a_server_without_smtputf8():
    with smtp_server(enable_SMTPUTF8=False) as (box, port):
        mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{port}")
        try:
            with pytest.raises(TransientSendError, match="SMTPUTF8"):
                await mailer.send(mail("zoë@example.com", 0), "n-0")
            await mailer.send(mail("c1@example.com", 1), "n-1")  # the next one is unharmed
        finally:
            await mailer.close()
    assert box.recipients == [["c1@example.com"]]


@pytest.mark.parametrize(("decode_data", "encoding"), [(False, b"8bit"), (True, b"base64")])
async def test_8bit_parts_go_only_to_a_server_that_offers_8bitmime(decode_data, encoding):
    # aiosmtpd offers 8BITMIME unless it decodes the data itself
    with smtp_server(decode_data=decode_data) as (box, port):
        mailer = SmtpMailer.from_url(f"smtp://127.0.0.1:{port}")
        try:
            await mailer.send(mail("c0@example.com", 0), "n-0")
        finally:
            await mailer.close()
    raw = box.raw[0]
    assert b"Content-Transfer-Encoding: " + encoding + b"\r\n" in raw
    assert raw.isascii() == (encoding == b"base64")
    assert box.messages[0].get_body(("plain",)).get_content().splitlines() == ["body 0: Grüße"]
