"""E-mail delivery over TLS, and a notify process killed in the middle of a send."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from services.notify.channels import SmtpMailer, TransientSendError
from services.notify.domain import Kind
from services.notify.mime import build_email
from services.notify.rendering import SAMPLES, Renderer
from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from shared.crypto import generate_key
from shared.events import Severity, ShipmentDelayed, new_envelope
from shared.infra import free_port
from shared.testing import eventually
from tests.support.data import API_KEY, order_body
from tests.support.kafka import publish_envelopes
from tests.support.notify import log_of, settled, smtp_server
from tests.support.services import served, service_process


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "smtp.crt", tmp_path / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def server_tls(tmp_path: Path) -> ssl.SSLContext:
    cert, key = self_signed(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def sample_email() -> Any:
    rendered = Renderer().render(
        Kind.SHIPMENT_DELAYED,
        "zh-CN",
        {
            "merchant": "M",
            "support_email": "s@example.com",
            "order_ref": "#7",
            **SAMPLES[Kind.SHIPMENT_DELAYED],
        },
    )
    return build_email(
        rendered,
        to_email="zhang@example.com",
        to_name="张三",
        mail_from="Shop <orders@shop.example>",
        message_id="n-1",
        domain="shop.example",
    )


def check_login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"shop", b"p@ss w0rd")
    return AuthResult(success=ok)


async def test_starttls_with_login_delivers_and_a_wrong_certificate_is_refused(tmp_path):
    with smtp_server(
        tls_context=server_tls(tmp_path),
        require_starttls=True,
        authenticator=check_login,
        auth_require_tls=True,
    ) as (mailbox, port):
        url = f"smtp+starttls://shop:p%40ss%20w0rd@127.0.0.1:{port}?verify=false"
        await SmtpMailer.from_url(url).send(sample_email(), "n-1")
        assert mailbox.recipients == [["zhang@example.com"]]
        assert mailbox.messages[0]["Subject"] == "非常抱歉，您的订单 #7 发货延迟"
        # the default verifies the certificate: a self-signed one is not trusted
        strict = SmtpMailer.from_url(f"smtp+starttls://shop:x@127.0.0.1:{port}")
        with pytest.raises(TransientSendError):
            await strict.send(sample_email(), "n-2")
        assert len(mailbox.raw) == 1


async def test_smtps_delivers_over_tls_from_the_first_byte(tmp_path):
    with smtp_server(ssl_context=server_tls(tmp_path)) as (mailbox, port):
        await SmtpMailer.from_url(f"smtps://127.0.0.1:{port}?verify=false").send(
            sample_email(), "n-1"
        )
    assert len(mailbox.raw) == 1
    assert mailbox.messages[0].get_body(("html",)).get_content().startswith("<!doctype html>")


@pytest.mark.parametrize(
    ("failpoint", "backend"),
    [("notify.before_send", "postgresql"), ("notify.after_send", "sqlite")],
)
async def test_notify_killed_mid_send_sends_the_notice_once(
    database_url, settings_for, broker, tmp_path, failpoint
):
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
            "DROPSHIP_DIGEST_WINDOW_S": "0",
            "DROPSHIP_SENDER_POLL_S": "0.2",
            "DROPSHIP_SEND_LEASE_S": "2",
        }
        notify = service_process("notify", env, tmp_path)
        notify.start(extra_env={"DROPSHIP_FAULT_POINTS": failpoint})
        try:
            async with served(order_app, order_settings, order_port) as order:
                placed = await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)
                order_id = placed.json()["id"]
                delay = ShipmentDelayed(
                    order_id=order_id,
                    supplier_id="sup-a",
                    reason="no_tracking_by_deadline",
                    severity=Severity.URGENT,
                )
                await publish_envelopes(broker.bootstrap, [new_envelope(delay)])
                # in a thread: the order service answers from this test's event loop
                assert await asyncio.to_thread(notify.wait_exit, 60) == 137, notify.log_tail()
                # restarted without the failpoint: the expired lease is taken up again
                await asyncio.to_thread(notify.start)
                async with httpx.AsyncClient(base_url=notify.url, timeout=10) as client:
                    rows = await eventually(lambda: settled(client, order_id, 1), timeout=60)
                    assert len(await log_of(client, order_id)) == 1
        finally:
            notify.stop()
    assert [r["status"] for r in rows] == ["sent"] and rows[0]["attempts"] == 2
    logged = notify.log_path.read_text()
    assert order_id in logged and "ann@example.com" not in logged  # contacts are never logged
    if failpoint == "notify.before_send":
        assert len(mailbox.raw) == 1
    else:
        # SMTP accepted the first copy just before the crash. SMTP has no idempotency,
        # so the resend is a second copy of the SAME message: one Message-ID, which
        # mail systems use to drop duplicates. This is the documented limit.
        assert len(mailbox.raw) == 2
        assert len({m["Message-ID"] for m in mailbox.messages}) == 1
