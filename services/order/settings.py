"""Typed settings of the order service."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import ClassVar

import pycountry
from pydantic import Field, SecretStr, field_validator, model_validator

from services.order.aftersales.domain import ComplaintTargets
from services.order.intake import IntakePolicy
from services.order.pii import PiiCipher, generate_key
from shared.db import is_sqlite
from shared.egress import EgressPolicy
from shared.events import ComplaintTier
from shared.settings import (
    ServiceSettings,
    held_fetch_max_wait_ms,
    held_fetch_min_bytes,
    refuse_loopback_url,
    refuse_weak_keyring,
    refuse_weak_secret,
)

log = logging.getLogger(__name__)


class OrderSettings(ServiceSettings):
    service_name: ClassVar[str] = "order"
    default_port: ClassVar[int] = 8001

    database_url: str | None = Field(None, validation_alias="DROPSHIP_ORDER_DATABASE_URL")
    port: int | None = Field(None, validation_alias="DROPSHIP_ORDER_PORT")

    kafka_fetch_max_wait_ms: int = held_fetch_max_wait_ms("DROPSHIP_ORDER_FETCH_MAX_WAIT_MS", 500)
    """How long the broker may hold the order service's fetch while nothing has arrived
    (the supplier's: `DROPSHIP_KAFKA_FETCH_MAX_WAIT_MS`, 100): the embedded broker reads
    every partition a waiting fetch names several times per wait, so a consumer that is
    awake costs it about a quarter as much at 500 ms as at 100."""
    kafka_fetch_min_bytes: int = held_fetch_min_bytes("DROPSHIP_ORDER_FETCH_MIN_BYTES")
    """The broker holds the order service's fetch until this much has arrived or its wait
    (`DROPSHIP_ORDER_FETCH_MAX_WAIT_MS`, 500 ms) is up: the suppliers' events of a trickle
    of orders come in one fetch per wait, not one each (an order's status may follow its
    supplier up to that wait later; none of these hops is on the way to a confirmation;
    1: at once)."""

    kafka_linger_ms: float = Field(
        1000.0, ge=0, le=5000, validation_alias="DROPSHIP_ORDER_CONSUMER_LINGER_MS"
    )
    """After a poll returns fewer than a batch, keep fetching up to this long for more
    before applying them in one transaction; a fetch wait that brings nothing ends it
    sooner. None of its events is on the way to a confirmation: under a steady trickle an
    order's status follows its supplier up to this much later, a lone event about one
    fetch wait later."""

    pii_key: SecretStr | None = None
    """`DROPSHIP_PII_KEY`: a base64 AES-256 key, or a keyring `kid:key,kid:key` (first encrypts)."""
    shopify_secret: SecretStr | None = None
    woocommerce_secret: SecretStr | None = None
    orders_page_max: int = Field(200, ge=1)
    high_value_limits: dict[str, Decimal] = Field(default_factory=dict)
    """`DROPSHIP_HIGH_VALUE_LIMITS`: JSON `{"USD": "1000"}`; orders above are held `high_value`."""

    @field_validator("high_value_limits")
    @classmethod
    def _limits_per_currency(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for currency, limit in value.items():
            if pycountry.currencies.get(alpha_3=currency) is None:
                raise ValueError(f"{currency!r} is not an ISO-4217 currency code")
            if not limit.is_finite() or limit < 0:
                raise ValueError(f"the {currency} limit must be a non-negative amount")
        return value

    order_intake_linger_ms: float = Field(2.0, ge=0, le=1000)
    """`DROPSHIP_ORDER_INTAKE_LINGER_MS`: how long the first storefront order of a group waits
    for others to share its transaction (group commit); 0: each order commits alone."""
    order_intake_max_group: int = Field(64, ge=1, le=1000)
    """`DROPSHIP_ORDER_INTAKE_MAX_GROUP`: at most this many orders in one intake transaction."""
    order_intake_writers: int = Field(0, ge=0, le=1000)
    """`DROPSHIP_ORDER_INTAKE_WRITERS`: intake groups a process writes at once; 0: one on
    SQLite (its one write lock), no cap on PostgreSQL."""

    def intake_writers(self) -> int | None:
        """The cap on a process's intake groups in flight (None: no cap)."""
        if self.order_intake_writers:
            return self.order_intake_writers
        return 1 if is_sqlite(self.db_url) else None

    # marketplace write-back (services.order.shops.writeback)
    writeback_enabled: bool = True
    writeback_poll_s: float = Field(1.0, gt=0)
    writeback_timeout_s: float = Field(10.0, gt=0)
    shop_allowed_hosts: str = ""
    """`DROPSHIP_SHOP_ALLOWED_HOSTS`: host names and networks a shop's `api_base_url` may
    reach although internal, when the egress guard is on (production); as
    `DROPSHIP_SUPPLIER_ALLOWED_HOSTS`."""
    writeback_max_attempts: int = Field(8, ge=1)
    writeback_backoff_s: float = Field(2.0, ge=0)
    writeback_backoff_max_s: float = Field(300.0, ge=0)
    writeback_lease_s: float = Field(60.0, gt=0)
    writeback_refund_money: bool = False
    """Whether a refund written back makes the shop's payment gateway pay the customer
    (Shopify refund transactions, WooCommerce `api_refund`); by default the shop only records
    it (the money went back another way, e.g. by the merchant)."""

    # after-sales (services.order.aftersales)
    supplier_url: str = Field("http://127.0.0.1:8002", validation_alias="DROPSHIP_SUPPLIER_URL")
    """Where the supplier service answers `POST /v1/suppliers/{id}/rma` (service token)."""
    rma_timeout_s: float = Field(15.0, gt=0)
    """How long an RMA request may take (the supplier service retries the supplier within)."""
    rma_retry_for_s: float = Field(3.0, ge=0)
    """How long an unreachable supplier service is retried before the answer is a 503."""
    complaint_response_normal_h: float = Field(24.0, gt=0)
    complaint_response_urgent_h: float = Field(4.0, gt=0)
    complaint_response_major_h: float = Field(1.0, gt=0)
    complaint_resolution_h: float = Field(48.0, gt=0)
    """Response targets per complaint tier and the resolution target, in hours."""

    @model_validator(mode="after")
    def _pii_key_required_in_production(self) -> OrderSettings:
        if self.pii_key is None:
            if self.environment == "production":
                raise ValueError("DROPSHIP_PII_KEY must be set in production")
            log.warning(
                "DROPSHIP_PII_KEY not set: using a throwaway key (data unreadable after restart)"
            )
            self.pii_key = SecretStr(generate_key())
        if self.environment == "production":
            refuse_weak_keyring("DROPSHIP_PII_KEY", self.pii_key.get_secret_value())
            refuse_loopback_url("DROPSHIP_SUPPLIER_URL", self.supplier_url)
            for variable, secret in (
                ("DROPSHIP_SHOPIFY_SECRET", self.shopify_secret),
                ("DROPSHIP_WOOCOMMERCE_SECRET", self.woocommerce_secret),
            ):
                if secret is not None and secret.get_secret_value():
                    refuse_weak_secret(variable, secret.get_secret_value())
        PiiCipher(self.pii_key.get_secret_value())  # refuse a malformed key at start-up
        return self

    def complaint_targets(self) -> ComplaintTargets:
        return ComplaintTargets(
            {
                ComplaintTier.NORMAL: timedelta(hours=self.complaint_response_normal_h),
                ComplaintTier.URGENT: timedelta(hours=self.complaint_response_urgent_h),
                ComplaintTier.MAJOR: timedelta(hours=self.complaint_response_major_h),
            },
            timedelta(hours=self.complaint_resolution_h),
        )

    def intake(self) -> IntakePolicy:
        return IntakePolicy(dict(self.high_value_limits))

    def egress_policy(self) -> EgressPolicy:
        return EgressPolicy.parse(self.guards_egress, self.shop_allowed_hosts)

    def cipher(self) -> PiiCipher:
        assert self.pii_key is not None
        return PiiCipher(self.pii_key.get_secret_value())
