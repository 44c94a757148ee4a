"""Typed settings of the notify service."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import ClassVar

from pydantic import Field, SecretStr, field_validator, model_validator

from services.notify.channel_config import OpsWebhook, SmtpConfig, parse_ops_webhooks
from services.notify.domain import ResponseTargets, RetryPolicy
from shared.settings import (
    ServiceSettings,
    held_fetch_max_wait_ms,
    held_fetch_min_bytes,
    refuse_loopback_url,
)


class NotifySettings(ServiceSettings):
    service_name: ClassVar[str] = "notify"
    default_port: ClassVar[int] = 8003

    database_url: str | None = Field(None, validation_alias="DROPSHIP_NOTIFY_DATABASE_URL")
    port: int | None = Field(None, validation_alias="DROPSHIP_NOTIFY_PORT")

    kafka_linger_ms: float = Field(
        1000.0, ge=0, le=5000, validation_alias="DROPSHIP_NOTIFY_CONSUMER_LINGER_MS"
    )
    """After a poll returns fewer than a batch, keep fetching up to this long for more
    before applying them in one transaction; a fetch wait that brings nothing ends it
    sooner. Under a steady trickle a notice may be queued up to this much later; a lone
    event waits about one fetch wait (500 ms)."""
    kafka_fetch_max_wait_ms: int = held_fetch_max_wait_ms("DROPSHIP_NOTIFY_FETCH_MAX_WAIT_MS", 500)
    """How long the broker may hold notify's fetch while nothing has arrived (the
    supplier's: `DROPSHIP_KAFKA_FETCH_MAX_WAIT_MS`, 100): fewer fetches, each of every
    partition it reads; a notice may be queued up to that wait later."""
    kafka_fetch_min_bytes: int = held_fetch_min_bytes("DROPSHIP_NOTIFY_FETCH_MIN_BYTES")
    """The broker holds notify's fetch until this much has arrived or its wait
    (`DROPSHIP_NOTIFY_FETCH_MAX_WAIT_MS`, 500 ms) is up: a trickle of events costs one fetch
    per wait, not one each (a notice may be queued up to that wait later; 1: at once)."""

    smtp_url: SecretStr | None = None
    """`smtp://[user:pass@]host:port` (plain), `smtp+starttls://…` (STARTTLS) or `smtps://…`
    (TLS from the first byte); `?verify=false` accepts a self-signed certificate. Unset:
    e-mails are written as `.eml` files under `<data_dir>/mail` (refused in production)."""
    sms_webhook_url: str | None = None
    ops_webhooks: str = "[]"
    """JSON list of `{"kind", "url", "secret"?, "name"?}`, see `OpsWebhook`."""
    order_url: str = Field("http://127.0.0.1:8001", validation_alias="DROPSHIP_ORDER_URL")
    """Where the order service answers `GET /v1/orders/{id}/contact`."""
    public_url: str | None = Field(None, validation_alias="DROPSHIP_NOTIFY_PUBLIC_URL")
    """Base URL of this service as ops reach it, for the acknowledge link in alerts."""

    mail_from: str = "Dropship Demo Store <orders@dropship.example>"
    merchant_name: str = "Dropship Demo Store"
    support_email: str = "support@dropship.example"

    customer_daily_cap: int = Field(5, ge=1)
    """Delay and dispatch notices one customer gets per 24 h at most (cancellations and
    refunds are never capped)."""
    digest_window_s: float = Field(60.0, ge=0)
    """A delay notice waits this long so several delayed lines of one order share it."""
    send_max_attempts: int = Field(8, ge=1)
    send_backoff_s: float = Field(2.0, gt=0)
    send_backoff_max_s: float = Field(600.0, gt=0)
    send_timeout_s: float = Field(10.0, gt=0)
    sender_poll_s: float = Field(1.0, gt=0)
    send_lease_s: float = Field(120.0, gt=0)
    """A send not finished within this long (the sender crashed) is taken up again."""
    sender_concurrency: int = Field(16, ge=1)
    send_handoff: bool = True
    """`DROPSHIP_SEND_HANDOFF`: a notice due now is claimed in the transaction that queues
    it and handed to this process's sender in memory (no claim transaction of its own).
    False: every send is claimed by the sender's poll, as before."""
    outcome_linger_ms: int = Field(20, ge=0, le=1000)
    """`DROPSHIP_OUTCOME_LINGER_MS`: outcomes of sends finishing within this long of each
    other are written in one transaction."""

    alert_target_normal_s: float = Field(24 * 3600, gt=0)
    alert_target_urgent_s: float = Field(4 * 3600, gt=0)
    alert_target_major_s: float = Field(3600, gt=0)
    escalation_scan_s: float = Field(30.0, gt=0)
    waiting_alert_after_s: float = Field(1800.0, gt=0)
    """`DROPSHIP_WAITING_ALERT_AFTER_S`: ops are paged once when order lines have waited
    this long for a temporarily unavailable supplier (scanned every `escalation_scan_s`)."""
    dlq_watch_s: float = Field(30.0, gt=0)
    hold_alert_after_s: float = Field(3600.0, gt=0)
    """`DROPSHIP_HOLD_ALERT_AFTER_S`: ops are alerted about a hold standing this long."""
    hold_scan_s: float = Field(30.0, gt=0)
    """How often DLQ depths are read from the broker; growth raises an alert."""

    @field_validator("smtp_url", "sms_webhook_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("ops_webhooks")
    @classmethod
    def _valid_webhooks(cls, value: str) -> str:
        try:
            raw = json.loads(value or "[]")
        except json.JSONDecodeError as exc:
            raise ValueError(f"DROPSHIP_OPS_WEBHOOKS is not JSON: {exc.msg}") from exc
        if not isinstance(raw, list):
            raise ValueError("DROPSHIP_OPS_WEBHOOKS must be a JSON list")
        names = [w.name for w in parse_ops_webhooks(raw)]
        if len(set(names)) != len(names):
            raise ValueError("DROPSHIP_OPS_WEBHOOKS channel names must be unique")
        return value

    @model_validator(mode="after")
    def _defaults(self) -> NotifySettings:
        if self.environment == "production":
            if self.smtp_url is None:
                raise ValueError(
                    "DROPSHIP_SMTP_URL must be set in production (without it e-mails would be"
                    " written to files and marked sent)"
                )
            refuse_loopback_url("DROPSHIP_ORDER_URL", self.order_url)
            refuse_loopback_url("DROPSHIP_NOTIFY_PUBLIC_URL", self.public_url)
        if self.public_url is None:
            self.public_url = f"http://127.0.0.1:{self.http_port}"
        if self.smtp_url is not None:
            SmtpConfig.from_url(self.smtp_url.get_secret_value())  # fail at start, not at send
        return self

    @property
    def ops_channels(self) -> list[OpsWebhook]:
        return parse_ops_webhooks(json.loads(self.ops_webhooks or "[]"))

    @property
    def response_targets(self) -> ResponseTargets:
        return ResponseTargets(
            normal=timedelta(seconds=self.alert_target_normal_s),
            urgent=timedelta(seconds=self.alert_target_urgent_s),
            major=timedelta(seconds=self.alert_target_major_s),
        )

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.send_max_attempts,
            initial=timedelta(seconds=self.send_backoff_s),
            maximum=timedelta(seconds=self.send_backoff_max_s),
        )
