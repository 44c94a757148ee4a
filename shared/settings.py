"""Typed configuration shared by every service, read from `DROPSHIP_*` environment variables."""

from __future__ import annotations

import base64
import binascii
import contextlib
import ipaddress
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEV_SERVICE_TOKEN = "dev-service-token"  # noqa: S105 - refused outside dev, see below
DEV_API_KEY = "dev-api-key"
DEV_TRACKING_SECRET = "dev-tracking-secret"  # noqa: S105 - refused in production

MIN_SECRET_LENGTH = 32
"""Characters a production secret must have at least (a base64 AES-256 key has 44)."""
HELD_FETCH_BYTES = 1024 * 1024
"""Fetch min bytes of the latency-tolerant consumers (notify, metrics): far more than
arrives within a fetch's wait at live rates, so the broker answers when the wait is up (or,
catching up, as soon as this much is there)."""
MAX_FETCH_MIN_BYTES = 50 * 1024 * 1024
"""Highest fetch min bytes a setting takes: a fetch's own size limit (aiokafka's
`fetch_max_bytes`), which a larger minimum could never reach."""


def held_fetch_max_wait_ms(variable: str, default: int) -> Any:
    """A latency-tolerant consumer's fetch wait in ms, read from `variable`: how long the
    broker may hold its fetch while nothing has arrived (0 to 5000)."""
    return Field(default, ge=0, le=5000, validation_alias=variable)


def held_fetch_min_bytes(variable: str) -> Any:
    """A latency-tolerant consumer's fetch min bytes, read from `variable`: `HELD_FETCH_BYTES`
    by default, from 1 (answered at the first event) to `MAX_FETCH_MIN_BYTES`."""
    return Field(HELD_FETCH_BYTES, ge=1, le=MAX_FETCH_MIN_BYTES, validation_alias=variable)


PLACEHOLDER_MARKERS = ("change-me", "changeme", "replace-with", "placeholder", "dev-")
"""Substrings of the development defaults and the example files' placeholders
(`.env.example`, `deploy/k8s/overlays/production/secrets.env.example`): a production secret
containing one, or decoding to one, was copied rather than generated."""


def _looks_like_placeholder(value: str) -> bool:
    candidates = [value.lower()]
    with contextlib.suppress(binascii.Error, UnicodeDecodeError, ValueError):
        candidates.append(
            base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode().lower()
        )
    return any(marker in text for text in candidates for marker in PLACEHOLDER_MARKERS)


def refuse_weak_secret(variable: str, value: str) -> None:
    """Refuse (naming `variable`) a production secret that is empty, short or a placeholder."""
    if not value:
        raise ValueError(f"{variable} must be set in production")
    if _looks_like_placeholder(value):
        raise ValueError(f"{variable} is a development or placeholder value: generate a real one")
    if len(value) < MIN_SECRET_LENGTH:
        raise ValueError(
            f"{variable} must be at least {MIN_SECRET_LENGTH} characters in production"
        )


def refuse_weak_keyring(variable: str, keyring: str) -> None:
    """Refuse a weak key in a `kid:key,kid:key` keyring (or a single bare key)."""
    for entry in keyring.split(","):
        refuse_weak_secret(variable, entry.strip().rpartition(":")[2])


def refuse_loopback_url(variable: str, url: str | None) -> None:
    """Refuse (naming `variable`) an unset URL or one whose host is loopback, in production.

    In containers and pods loopback is the caller's own sandbox, never another service.
    """
    if not url:
        raise ValueError(f"{variable} must be set in production")
    host = (urlsplit(url).hostname or "").lower()
    if not host:
        raise ValueError(f"{variable} is not an absolute URL: {url!r}")
    if host == "localhost" or host.endswith(".localhost"):
        raise ValueError(f"{variable} points at loopback ({host}) in production")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if address.is_loopback or address.is_unspecified:
        raise ValueError(f"{variable} points at loopback ({host}) in production")


def _split(keys: str) -> frozenset[str]:
    return frozenset(k.strip() for k in keys.split(",") if k.strip())


class ServiceSettings(BaseSettings):
    """Settings common to all services; each service subclasses it to add its own.

    Outside `environment=dev` the class refuses the development defaults (API key,
    service token, PII key) so a production deployment cannot run on them by accident.
    """

    model_config = SettingsConfigDict(env_prefix="DROPSHIP_", extra="ignore", populate_by_name=True)

    service_name: ClassVar[str] = "service"
    default_port: ClassVar[int] = 8000

    environment: Literal["dev", "test", "production"] = "dev"
    data_dir: Path = Path("./var")
    database_url: str | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    migrate_on_start: bool = True

    kafka_bootstrap: str = "127.0.0.1:9092"
    kafka_partitions: int = Field(8, ge=1)
    kafka_replication_factor: int = Field(1, ge=1)
    kafka_enable_idempotence: bool = False
    kafka_session_timeout_ms: int = 6000
    kafka_heartbeat_interval_ms: int = 500
    kafka_connect_backoff_max_s: float = 5.0
    kafka_producer_linger_ms: int = Field(2, ge=0, le=100)
    """How long the producer waits for more messages to fill a batch before sending."""

    consumer_max_attempts: int = Field(5, ge=1)
    consumer_retry_backoff_s: float = Field(0.2, ge=0)
    consumer_retry_backoff_max_s: float = Field(5.0, ge=0)
    consumers_enabled: bool = True
    consumer_batch_size: int = Field(100, ge=1)
    """Events applied per transaction: a poll's events across partitions and topics go in one
    (a failing one goes partition by partition, then one by one)."""
    kafka_linger_ms: float = Field(5.0, ge=0)
    """After a poll returns fewer than `consumer_batch_size` events, wait this long for more
    before applying them (0: apply at once)."""
    kafka_fetch_max_wait_ms: int = Field(100, ge=0)
    kafka_fetch_min_bytes: int = Field(1, ge=1, le=MAX_FETCH_MIN_BYTES)
    """The broker holds a fetch until this much has arrived or `kafka_fetch_max_wait_ms` is
    up (1: answered at the first message)."""
    kafka_idle_after_s: float = Field(3.0, ge=0)
    """A consumer with nothing to do for this long stops fetching until the doorbell rings
    or `kafka_idle_peek_s` passes (0: always fetch). After hearing a ring it fetches for at
    least this long, so a process rings at most every quarter of it."""
    kafka_idle_peek_s: float = Field(5.0, gt=0)
    """Longest an idle consumer goes without fetching (picks up messages nobody rang for)."""
    kafka_doorbell: bool = True
    """Ring the one-partition `dropship-doorbell` topic after a published batch (at most
    every quarter of `kafka_idle_after_s`)."""
    kafka_consumer_timeout_ms: int = Field(2000, ge=10)
    """Longest aiokafka's fetch routine sleeps with nothing to react to (its default 200 ms
    walks every paused partition of an idle consumer five times a second)."""
    kafka_doorbell_wait_ms: int = Field(1000, ge=10, le=10_000)
    """Fetch wait of each process's doorbell listener: longer costs the broker less while
    idle and adds up to about half of it to the first hop after an idle spell."""
    db_pool_pre_ping: bool = False
    max_inflight_requests: int = Field(64, ge=1)
    """HTTP requests one process serves at once; the rest wait up to `shed_wait_s`, then 503."""
    shed_wait_s: float = Field(0.25, ge=0)
    max_body_bytes: int = Field(1024 * 1024, ge=1)
    """Largest request body a route takes (counted as it streams in; past it: 413)."""
    max_webhook_body_bytes: int = Field(512 * 1024, ge=1)
    """Largest body of a webhook (`/v1/webhooks/...`), refused before its signature is checked."""
    max_import_body_bytes: int = Field(10 * 1024 * 1024, ge=1)
    """Largest CSV import (`.../import`)."""

    outbox_batch_size: int = Field(500, ge=1)
    outbox_poll_interval_s: float = Field(1.0, gt=0)
    outbox_hand_off: bool = True
    """Publish the rows a commit in this process just wrote without reading them back."""
    outbox_linger_ms: float = Field(5.0, ge=0, le=1000)
    """Woken from idle, the relay waits this long so commits close behind join one batch."""
    outbox_mark_delay_ms: float = Field(500.0, ge=0, le=10_000)
    """Published rows are marked up to this long after they went out, with the next batch's
    check (PostgreSQL) or together (SQLite); 0: each batch marked at once."""
    idle_poll_backoff: float = Field(8.0, ge=1)
    """Safety-net polls that also wake on events (outbox relay, supplier dispatcher, notify
    sender) stretch up to this many times their interval while they find nothing; 1: off."""
    idle_poll_max_s: float = Field(60.0, gt=0)
    """Clock-driven polls that read their next due time from the database (marketplace
    write-back, waiting lines, supplier status checks) sleep until it, but at most this
    long: a safety net for work written where no wake-up reaches them (another process)."""
    relay_enabled: bool = True

    api_keys: str = DEV_API_KEY
    """Storefront keys (`X-API-Key`): place and read orders."""
    admin_api_keys: str = ""
    """Admin keys (`X-API-Key`): suppliers, offers, redaction, notifications, metrics. Unset:
    the storefront keys keep admin rights (backward compatible)."""
    service_token: SecretStr = SecretStr(DEV_SERVICE_TOKEN)

    log_level: str = "INFO"
    log_json: bool = True
    gc_freeze: bool = True
    """Once started, move every object built so far (imported modules, the app, its clients)
    out of the garbage collector's scans (`gc.freeze`): a full collection then looks at
    what requests and events made, not at ~130,000 startup objects (~70 ms of CPU and of
    event-loop stall each time). Unfrozen at shutdown."""
    gc_young_threshold: int = Field(50_000, ge=0)
    """While serving, the collector's young pass runs after this many new container objects
    (net of those freed) instead of CPython's 700: a batch of events or a request builds
    thousands of short-lived dicts and tuples, and at 700 the collector walks most of them
    while they are still in use (about 5 µs of each metrics event's ~55). Garbage that only
    a cycle keeps waits a little longer; each pass then takes a few milliseconds. 0: the
    interpreter's own thresholds."""

    otel_exporter: Literal["none", "console", "otlp"] = "none"
    """Where OpenTelemetry spans go: nowhere (ids still travel), stdout, or OTLP/HTTP."""
    otel_endpoint: str | None = None
    """OTLP/HTTP collector base URL (`…/v1/traces` is added); unset: `OTEL_EXPORTER_OTLP_*`."""
    otel_sample_ratio: float = Field(1.0, ge=0, le=1)
    """Share of new traces recorded; a caller's sampling decision is followed."""

    egress_guard: bool | None = None
    """Refuse calls to internal addresses (private, loopback, link-local...) at the URLs
    admins configure (supplier and shop `api_base_url`); unset: on in production only."""

    fault_points: str = ""
    """Test-only failpoints (comma-separated names) where the process kills itself."""

    @model_validator(mode="after")
    def _fill_defaults_and_refuse_unsafe(self) -> ServiceSettings:
        if self.database_url is None:
            path = (self.data_dir / f"{self.service_name}.db").resolve()
            self.database_url = f"sqlite+aiosqlite:///{path}"
        if self.port is None:
            self.port = self.default_port
        if self.environment == "production":
            if not _split(self.api_keys):
                raise ValueError("DROPSHIP_API_KEYS must be set to real keys in production")
            for key in sorted(_split(self.api_keys)):
                refuse_weak_secret("DROPSHIP_API_KEYS", key)
            for key in sorted(_split(self.admin_api_keys)):
                refuse_weak_secret("DROPSHIP_ADMIN_API_KEYS", key)
            refuse_weak_secret("DROPSHIP_SERVICE_TOKEN", self.service_token.get_secret_value())
            if self.fault_points:
                raise ValueError("DROPSHIP_FAULT_POINTS is for tests only")
            if self.egress_guard is False:
                raise ValueError(
                    "DROPSHIP_EGRESS_GUARD cannot be off in production: allow-list on-premise "
                    "hosts instead (DROPSHIP_SUPPLIER_ALLOWED_HOSTS, DROPSHIP_SHOP_ALLOWED_HOSTS)"
                )
        return self

    @property
    def guards_egress(self) -> bool:
        """Are calls to admin-configured URLs kept off internal addresses?"""
        return self.environment == "production" if self.egress_guard is None else self.egress_guard

    @property
    def api_key_set(self) -> frozenset[str]:
        """Keys the storefront API takes: storefront keys and admin keys."""
        return _split(self.api_keys) | _split(self.admin_api_keys)

    @property
    def admin_key_set(self) -> frozenset[str]:
        """Keys the admin API takes: the admin keys, or every storefront key when none is set."""
        return _split(self.admin_api_keys) or _split(self.api_keys)

    @property
    def db_url(self) -> str:
        assert self.database_url is not None
        return self.database_url

    @property
    def http_port(self) -> int:
        assert self.port is not None
        return self.port
