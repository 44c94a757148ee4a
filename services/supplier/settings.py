"""Typed settings of the supplier service."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr, model_validator

from shared.crypto import PiiCipher, generate_key
from shared.egress import EgressPolicy
from shared.settings import (
    DEV_TRACKING_SECRET,
    ServiceSettings,
    refuse_loopback_url,
    refuse_weak_keyring,
    refuse_weak_secret,
)

log = logging.getLogger(__name__)


class SupplierSettings(ServiceSettings):
    service_name: ClassVar[str] = "supplier"
    default_port: ClassVar[int] = 8002

    database_url: str | None = Field(None, validation_alias="DROPSHIP_SUPPLIER_DATABASE_URL")
    port: int | None = Field(None, validation_alias="DROPSHIP_SUPPLIER_PORT")

    consumer_batch_size: int = Field(
        50, ge=1, validation_alias="DROPSHIP_SUPPLIER_CONSUMER_BATCH_SIZE"
    )
    """Events per transaction (a whole poll, across partitions). Placed orders of one are
    routed together (offer rows are locked only at the end, summed, in (supplier, sku) order)."""
    route_in_batches: bool = Field(True, validation_alias="DROPSHIP_SUPPLIER_ROUTE_IN_BATCHES")
    """False: every consumed event by its own handler (as before issue 15's lever 1)."""
    pii_key: SecretStr | None = None
    """`DROPSHIP_PII_KEY` also seals supplier credentials at rest."""
    public_url: str | None = Field(None, validation_alias="DROPSHIP_SUPPLIER_PUBLIC_URL")
    """Base URL suppliers call back (default `http://127.0.0.1:<port>`; required in production)."""
    order_url: str = Field("http://127.0.0.1:8001", validation_alias="DROPSHIP_ORDER_URL")
    """Where the order service answers `GET /v1/orders/{id}/contact` (the ship-to address,
    read when a supplier is called and never stored)."""
    tracking_secret: SecretStr = SecretStr(DEV_TRACKING_SECRET)
    handling_sla_s: float = Field(7200.0, gt=0)
    """`DROPSHIP_HANDLING_SLA_S`: placed -> every line accepted by a supplier within this
    long, else `shipment-delayed` `not_accepted_in_time` (urgent), once per order."""
    tracking_silence_h: float = Field(120.0, gt=0)
    """`DROPSHIP_TRACKING_SILENCE_H`: a parcel without tracking movement this many hours
    after dispatch (fractions allowed) is `shipment-delayed` `lost_in_transit`, once."""
    sla_scan_interval_s: float = Field(30.0, gt=0)
    dispatcher_poll_s: float = Field(1.0, gt=0)
    dispatcher_concurrency: int = Field(64, ge=1)
    supplier_timeout_s: float = Field(5.0, gt=0)
    supplier_max_attempts: int = Field(4, ge=1)
    supplier_backoff_s: float = Field(0.2, ge=0)
    breaker_failure_rate: float = Field(0.5, gt=0, le=1)
    breaker_cooldown_s: float = Field(30.0, gt=0)
    supplier_lease_s: float = Field(60.0, gt=0)
    """A supplier call not recorded within this long (its replica died) is made again,
    with the same idempotency key, by any replica."""
    supplier_check_after_s: float = Field(30.0, gt=0)
    """An order the supplier took but has not decided on is asked about after this long
    (and as often again while undecided): its callbacks may all have been lost."""
    supplier_check_max_s: float = Field(3600.0, gt=0)
    """An accepted order not reported dispatched (or a dispatched one not reported
    delivered) is asked about `supplier_check_after_s` after that step, then at gaps of
    half its age up to this long, for 30 days."""
    supplier_decision_timeout_s: float = Field(3600.0, gt=0)
    """A supplier that has neither accepted nor rejected this long after taking an order
    (as its status check tells) is called off and the lines fail over."""
    supplier_reconcile_interval_s: float = Field(5.0, gt=0)
    """How often the reconciler looks for orders whose check is due."""
    supplier_retry_waiting_s: float = Field(5.0, gt=0)
    """A line waiting for a temporarily unavailable supplier is routed again after this
    long, doubling per attempt up to `supplier_retry_waiting_max_s` (and at once when a
    supplier's breaker closes)."""
    supplier_retry_waiting_max_s: float = Field(60.0, gt=0)
    rma_timeout_s: float = Field(5.0, gt=0)
    """`DROPSHIP_RMA_TIMEOUT_S`: how long one return-authorisation call to a supplier may take."""
    rma_max_attempts: int = Field(2, ge=1)
    """Calls per return authorisation (same Idempotency-Key) before the answer is a 503."""
    supplier_cache_ttl_s: float = Field(2.0, ge=0)
    """Supplier rows (credentials, SLA, counters for ranking) are cached this long."""
    supplier_cache_max_entries: int = Field(10_000, ge=1)
    """Supplier ids (known or not: callback URLs name them) the cache holds at most."""
    supplier_webhook_concurrency: int = Field(8, ge=1)
    """Callbacks handled at once; the rest wait up to `supplier_webhook_wait_s`, then get a 503
    (as does a callback that finds every database connection taken)."""
    supplier_webhook_wait_s: float = Field(2.0, gt=0)
    """How long a callback waits for a slot before a 503."""
    supplier_callback_linger_ms: float = Field(1.0, ge=0, le=1000)
    """`DROPSHIP_SUPPLIER_CALLBACK_LINGER_MS`: callbacks (suppliers' and carriers') that
    arrive within this many milliseconds are applied in one transaction, each answered
    after its commit (group commit, `shared/group_commit.py`); 0: each in its own."""
    supplier_callback_max_group: int = Field(32, ge=1, le=1000)
    """`DROPSHIP_SUPPLIER_CALLBACK_MAX_GROUP`: at most this many callbacks in one transaction
    (at most `supplier_webhook_concurrency` are in hand at once)."""
    supplier_ship_to_linger_ms: float = Field(1.0, ge=0, le=1000)
    """`DROPSHIP_SUPPLIER_SHIP_TO_LINGER_MS`: the destinations of supplier orders placed
    within this many milliseconds of each other are read from the order service in one
    request (`POST /v1/contacts:lookup`); 0: each order's alone."""
    supplier_callback_writers: int = Field(1, ge=1, le=1000)
    """`DROPSHIP_SUPPLIER_CALLBACK_WRITERS`: callback groups a process writes at once. One
    by default: callbacks arriving meanwhile form the next group, and two groups of one
    process never lock the same supplier orders in opposite orders."""
    supplier_callback_journal_dir: Path | None = None
    """With a folder, a callback that would get a 503 (busy) is recorded there and answered
    202 `recorded` at once, then applied in order (`services/supplier/journal.py`);
    `make up` sets it to the data folder. One journal per process: not for replicas."""
    supplier_allowed_hosts: str = ""
    """`DROPSHIP_SUPPLIER_ALLOWED_HOSTS`: comma-separated host names (`.corp.example` for a
    whole domain) and networks (`10.20.0.0/16`) a supplier's `api_base_url` may reach although
    internal (on-premise suppliers), when the egress guard is on (production)."""
    callback_replay_window_s: float = Field(300.0, gt=0)
    """Supplier and tracking callbacks carry a signed `X-*-Timestamp`; one further than
    this from our clock (either way) is refused 401 (a captured callback replayed later)."""
    accept_unstamped_callbacks: bool = False
    """Development only (refused in production): also take callbacks signed the previous
    way, over the body alone without a timestamp, while a supplier's sender is upgraded."""

    @model_validator(mode="after")
    def _keys(self) -> SupplierSettings:
        if self.pii_key is None:
            if self.environment == "production":
                raise ValueError("DROPSHIP_PII_KEY must be set in production")
            log.warning("DROPSHIP_PII_KEY unset: supplier credentials sealed with a throwaway key")
            self.pii_key = SecretStr(generate_key())
        if self.environment == "production":
            refuse_weak_keyring("DROPSHIP_PII_KEY", self.pii_key.get_secret_value())
            refuse_weak_secret("DROPSHIP_TRACKING_SECRET", self.tracking_secret.get_secret_value())
            refuse_loopback_url("DROPSHIP_SUPPLIER_PUBLIC_URL", self.public_url)
            if self.accept_unstamped_callbacks:
                raise ValueError(
                    "DROPSHIP_ACCEPT_UNSTAMPED_CALLBACKS is for development only: callbacks "
                    "without a signed timestamp can be replayed"
                )
        if self.public_url is None:
            self.public_url = f"http://127.0.0.1:{self.http_port}"
        return self

    def egress_policy(self) -> EgressPolicy:
        return EgressPolicy.parse(self.guards_egress, self.supplier_allowed_hosts)

    def cipher(self) -> PiiCipher:
        assert self.pii_key is not None
        return PiiCipher(self.pii_key.get_secret_value())
