"""Channels: how a rendered notice or an alert leaves the building.

Every channel raises `TransientSendError` (try again later, maybe after the server's
`Retry-After`) or `PermanentSendError` (retrying cannot help) and returns normally
only when the far side accepted the message. Chat platforms that answer HTTP 200 with
an error code in the body (DingTalk, WeCom, Feishu) are read, not trusted blindly.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import re
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx

from services.notify.channel_config import OpsWebhook, SmtpConfig
from services.notify.mime import OutgoingEmail
from services.notify.smtp_pool import SmtpSessions

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")


def scrub(text: str) -> str:
    """An error message safe to store and show: no e-mail addresses or phone numbers."""
    return _PHONE.sub("<phone>", _EMAIL.sub("<email>", text))[:500]


class SendError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(scrub(message))


class TransientSendError(SendError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentSendError(SendError):
    pass


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds: either delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


# -- e-mail -----------------------------------------------------------------------------


class Mailer:
    async def send(self, message: OutgoingEmail, notification_id: str) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        """Let go of anything kept between sends (open sessions)."""


@dataclass(frozen=True)
class SmtpMailer(Mailer):
    """SMTP per `DROPSHIP_SMTP_URL`: `smtp://` plain, `smtp+starttls://`, `smtps://`.

    Sessions stay open between sends (`SmtpSessions`); a failed send closes its own."""

    config: SmtpConfig
    timeout_s: float = 10.0
    sessions: SmtpSessions = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sessions", SmtpSessions(self._client))

    @classmethod
    def from_url(cls, url: str, timeout_s: float = 10.0) -> SmtpMailer:
        return cls(SmtpConfig.from_url(url), timeout_s)

    def _client(self, local_hostname: str) -> aiosmtplib.SMTP:
        c = self.config
        return aiosmtplib.SMTP(
            hostname=c.hostname,
            port=c.port,
            username=c.username,
            password=c.password,
            use_tls=c.use_tls,
            start_tls=c.start_tls,
            tls_context=_tls_context(c.verify) if c.use_tls or c.start_tls else None,
            timeout=self.timeout_s,
            local_hostname=local_hostname,
        )

    async def send(self, message: OutgoingEmail, notification_id: str) -> None:
        try:
            await self.sessions.send(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [error.code for error in exc.recipients]
            if all(500 <= code < 600 for code in codes):
                raise PermanentSendError(f"recipient refused: {exc}") from exc
            raise TransientSendError(f"recipient deferred: {exc}") from exc
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise TransientSendError(f"SMTP authentication failed ({exc.code})") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise PermanentSendError(f"SMTP {exc.code}: {exc.message}") from exc
            raise TransientSendError(f"SMTP {exc.code}: {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise TransientSendError(f"SMTP unavailable: {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self.sessions.close()


@functools.cache
def _tls_context(verify: bool) -> ssl.SSLContext:
    """Made once: loading the system CA bundle costs ~30 ms of CPU and blocks the loop."""
    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


@dataclass(frozen=True)
class EmlMailer(Mailer):
    """Development default: each e-mail is a `.eml` file, named after its notification."""

    directory: Path

    async def send(self, message: OutgoingEmail, notification_id: str) -> None:
        final = self.directory / f"{notification_id}.eml"
        partial = final.with_suffix(".eml.part")
        try:
            partial.write_bytes(bytes(message))
        except FileNotFoundError:  # made on the first e-mail (or again, if someone removed it)
            self.directory.mkdir(parents=True, exist_ok=True)
            partial.write_bytes(bytes(message))
        os.replace(partial, final)  # a resend overwrites the same file: still one e-mail


# -- HTTP channels ------------------------------------------------------------------------


async def post_json(
    http: httpx.AsyncClient,
    url: str,
    payload: dict[str, Any] | bytes,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """POST and classify the HTTP outcome; the caller checks the body of a 2xx."""
    headers = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
    body = (
        payload if isinstance(payload, bytes) else json.dumps(payload, ensure_ascii=False).encode()
    )
    try:
        response = await http.post(url, content=body, headers=headers, params=params)
    except httpx.HTTPError as exc:
        raise TransientSendError(f"{type(exc).__name__}: {exc}") from exc
    if response.status_code == 429 or response.status_code >= 500 or response.status_code == 408:
        raise TransientSendError(
            f"HTTP {response.status_code}", retry_after_seconds(response.headers.get("Retry-After"))
        )
    if response.status_code >= 400:
        raise PermanentSendError(f"HTTP {response.status_code}: {response.text[:200]}")
    return response


async def send_sms(
    http: httpx.AsyncClient, url: str, *, to: str, text: str, reference: str
) -> None:
    """The SMS provider contract: JSON `{to, text, reference}`, idempotent on `reference`."""
    await post_json(
        http,
        url,
        {"to": to, "text": text, "reference": reference},
        headers={"Idempotency-Key": reference},
    )


@dataclass(frozen=True)
class AlertMessage:
    alert_id: str
    kind: str
    severity: str
    title: str
    lines: list[str]
    order_id: str | None
    escalations: int
    ack_url: str
    raised_at: str

    @property
    def heading(self) -> str:
        badge = {"normal": "🟡", "urgent": "🟠", "major": "🔴"}.get(self.severity, "")
        again = f" (escalated x{self.escalations})" if self.escalations else ""
        return f"{badge} [{self.severity.upper()}] {self.title}{again}"

    def markdown(self) -> str:
        body = "\n".join(f"- {line}" for line in self.lines)
        return f"### {self.heading}\n{body}\n\nAcknowledge: `POST {self.ack_url}`"

    def plain(self) -> str:
        body = "\n".join(self.lines)
        return f"{self.heading}\n{body}\nAcknowledge: POST {self.ack_url}"


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk robot signing: base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}"))."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """Feishu bot signing: base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", message=b""))."""
    digest = hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def generic_signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """`X-Dropship-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`."""
    mac = hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256)
    return f"t={timestamp_s},v1={mac.hexdigest()}"


_RATE_LIMIT_CODES = {130101, 45009, 9499, 11232, 11233}
"""DingTalk "sending too fast", WeCom "API freq out of limit", Feishu rate limits."""


def _check_code(platform: str, body: dict[str, Any], *names: str) -> None:
    for name in names:
        if name in body:
            code = body[name]
            if code in (0, "0"):
                return
            message = str(body.get("errmsg") or body.get("msg") or body.get("StatusMessage"))
            if isinstance(code, int) and code in _RATE_LIMIT_CODES:
                raise TransientSendError(f"{platform} rate limit {code}: {message}", 60.0)
            raise PermanentSendError(f"{platform} error {code}: {message}")
    raise TransientSendError(f"{platform} answered without a status code")


async def send_alert(http: httpx.AsyncClient, hook: OpsWebhook, alert: AlertMessage) -> None:
    secret = hook.secret.get_secret_value() if hook.secret else None
    if hook.kind == "slack":
        payload: dict[str, Any] = {
            "text": alert.plain(),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": alert.heading[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": alert.markdown()}},
            ],
        }
        await post_json(http, hook.url, payload)
    elif hook.kind == "dingtalk":
        params = None
        if secret:
            now_ms = int(time.time() * 1000)
            params = {"timestamp": str(now_ms), "sign": dingtalk_sign(secret, now_ms)}
        payload = {
            "msgtype": "markdown",
            "markdown": {"title": alert.heading, "text": alert.markdown()},
        }
        response = await post_json(http, hook.url, payload, params=params)
        _check_code("dingtalk", _json(response), "errcode")
    elif hook.kind == "wecom":
        payload = {"msgtype": "markdown", "markdown": {"content": alert.markdown()}}
        response = await post_json(http, hook.url, payload)
        _check_code("wecom", _json(response), "errcode")
    elif hook.kind == "feishu":
        payload = {"msg_type": "text", "content": {"text": alert.plain()}}
        if secret:
            now_s = int(time.time())
            payload = {"timestamp": str(now_s), "sign": feishu_sign(secret, now_s), **payload}
        response = await post_json(http, hook.url, payload)
        _check_code("feishu", _json(response), "code", "StatusCode")
    else:
        document = {
            "alert_id": alert.alert_id,
            "kind": alert.kind,
            "severity": alert.severity,
            "title": alert.title,
            "text": alert.plain(),
            "order_id": alert.order_id,
            "escalations": alert.escalations,
            "raised_at": alert.raised_at,
            "ack_url": alert.ack_url,
        }
        body = json.dumps(document, ensure_ascii=False).encode()
        headers = {"Idempotency-Key": f"{alert.alert_id}:{alert.escalations}"}
        if secret:
            headers["X-Dropship-Signature"] = generic_signature(secret, int(time.time()), body)
        await post_json(http, hook.url, body, headers=headers)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise TransientSendError(f"not JSON: {response.text[:100]}") from exc
    if not isinstance(body, dict):
        raise TransientSendError("unexpected JSON answer")
    return body
