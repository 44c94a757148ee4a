"""How the channels are configured: ops webhooks and the SMTP URL, parsed without I/O.

Both settings (to refuse bad configuration at start) and channels (to send) read these,
so they live apart from either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator


class OpsWebhook(BaseModel):
    """One ops alert channel from `DROPSHIP_OPS_WEBHOOKS`."""

    kind: Literal["slack", "dingtalk", "wecom", "feishu", "generic"]
    url: str
    secret: SecretStr | None = None
    name: str | None = Field(None, max_length=64)
    """Shown in the delivery log; defaults to `<kind>-<position>`."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an http(s) URL")
        return value


def parse_ops_webhooks(raw: list[Any]) -> list[OpsWebhook]:
    """Validated webhooks, each named (`<kind>-<position>` unless it has a name)."""
    hooks = [OpsWebhook.model_validate(item) for item in raw]
    return [
        hook if hook.name else hook.model_copy(update={"name": f"{hook.kind}-{i}"})
        for i, hook in enumerate(hooks)
    ]


@dataclass(frozen=True)
class SmtpConfig:
    """`DROPSHIP_SMTP_URL` parsed: `smtp://` plain, `smtp+starttls://`, `smtps://`."""

    hostname: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False
    start_tls: bool = False
    verify: bool = True

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse the URL; `ValueError` naming the variable when it is not one we can use."""
        parts = urlsplit(url)
        schemes = {"smtp": (False, False, 25), "smtp+starttls": (False, True, 587)}
        schemes["smtps"] = (True, False, 465)
        if parts.scheme not in schemes:
            raise ValueError(
                "DROPSHIP_SMTP_URL must start with smtp://, smtp+starttls:// or smtps://"
            )
        if not parts.hostname:
            raise ValueError("DROPSHIP_SMTP_URL has no host")
        use_tls, start_tls, default_port = schemes[parts.scheme]
        query = parse_qs(parts.query)
        return cls(
            hostname=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=start_tls,
            verify=query.get("verify", ["true"])[0].lower() not in ("false", "0", "no"),
        )
