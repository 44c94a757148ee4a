"""Typed settings of the ops console."""

from __future__ import annotations

import secrets
from typing import ClassVar

from pydantic import Field, SecretStr, model_validator

from shared.settings import ServiceSettings, refuse_loopback_url, refuse_weak_secret


class ConsoleSettings(ServiceSettings):
    service_name: ClassVar[str] = "console"
    default_port: ClassVar[int] = 8005

    database_url: str | None = Field(None, validation_alias="DROPSHIP_CONSOLE_DATABASE_URL")
    port: int | None = Field(None, validation_alias="DROPSHIP_CONSOLE_PORT")
    order_url: str = Field("http://127.0.0.1:8001", validation_alias="DROPSHIP_ORDER_URL")
    supplier_url: str = Field("http://127.0.0.1:8002", validation_alias="DROPSHIP_SUPPLIER_URL")
    notify_url: str = Field("http://127.0.0.1:8003", validation_alias="DROPSHIP_NOTIFY_URL")
    metrics_url: str = Field("http://127.0.0.1:8004", validation_alias="DROPSHIP_METRICS_URL")
    session_secret: SecretStr = Field(
        SecretStr(""), validation_alias="DROPSHIP_CONSOLE_SESSION_SECRET"
    )
    """Key that signs session cookies; empty in dev: a random one per process start."""
    session_max_age_s: int = Field(
        8 * 3600, ge=60, validation_alias="DROPSHIP_CONSOLE_SESSION_MAX_AGE_S"
    )
    secure_cookies: bool = Field(False, validation_alias="DROPSHIP_CONSOLE_SECURE_COOKIES")
    """Mark the session cookie `Secure` (set it when the console is served over HTTPS)."""
    max_failed_logins: int = Field(5, ge=1, validation_alias="DROPSHIP_CONSOLE_MAX_FAILED_LOGINS")
    lockout_s: int = Field(900, ge=1, validation_alias="DROPSHIP_CONSOLE_LOCKOUT_S")
    stepup_s: int = Field(300, ge=1, validation_alias="DROPSHIP_CONSOLE_STEPUP_S")
    """Key operations (refund, cancel, user admin) need a second factor this recent."""
    backend_timeout_s: float = Field(
        10.0, gt=0, validation_alias="DROPSHIP_CONSOLE_BACKEND_TIMEOUT_S"
    )

    @model_validator(mode="after")
    def _session_secret(self) -> ConsoleSettings:
        if not self.session_secret.get_secret_value():
            if self.environment == "production":
                raise ValueError("DROPSHIP_CONSOLE_SESSION_SECRET must be set in production")
            self.session_secret = SecretStr(secrets.token_urlsafe(32))
        if self.environment == "production":
            secret = self.session_secret.get_secret_value()
            refuse_weak_secret("DROPSHIP_CONSOLE_SESSION_SECRET", secret)
            for variable, url in (
                ("DROPSHIP_ORDER_URL", self.order_url),
                ("DROPSHIP_SUPPLIER_URL", self.supplier_url),
                ("DROPSHIP_NOTIFY_URL", self.notify_url),
                ("DROPSHIP_METRICS_URL", self.metrics_url),
            ):
                refuse_loopback_url(variable, url)
        return self

    @property
    def api_key(self) -> str:
        """The key the console presents to the services: the first admin key (the console
        manages suppliers and reads the metrics API)."""
        return sorted(self.admin_key_set)[0] if self.admin_key_set else ""
