"""Shops and write-back tasks: pure records, registration rules and errors (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

Platform = Literal["shopify", "woocommerce"]
PLATFORMS: tuple[Platform, ...] = ("shopify", "woocommerce")


class ShopError(Exception):
    """Root of the shop errors, mapped to HTTP once by `shops.api.SHOP_ERRORS` (kept apart
    from `OrderError` so the order routes' table stays the order aggregate's own)."""


class ShopNotFound(ShopError):
    def __init__(self, shop_id: str) -> None:
        super().__init__(f"shop {shop_id} not found")


class DuplicateShop(ShopError):
    def __init__(self, platform: str, domain: str) -> None:
        super().__init__(f"a {platform} shop with domain {domain} is already registered")


class InvalidShop(ShopError):
    """A shop body that breaks a rule the schema cannot express; names the field."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.details = [{"field": f"body.{field_name}", "reason": reason}]


class WritebackNotFound(ShopError):
    def __init__(self, task_id: int) -> None:
        super().__init__(f"write-back {task_id} not found")


class WritebackNotFailed(ShopError):
    """Only a write-back that gave up can be tried again (a pending one is still trying)."""

    def __init__(self, task_id: int, status: str) -> None:
        super().__init__(f"write-back {task_id} is {status}, not failed")


class UnknownShop(ShopError):
    """A webhook from a shop we do not know (or that is disabled), with no default secret."""


def normalise_domain(value: str) -> str:
    """`https://Shop.Example.de/` and `shop.example.de` both become `shop.example.de`.

    Shopify sends the bare `*.myshopify.com` host; WooCommerce sends the site URL (which
    may carry a path for a sub-folder install), so the path is kept without its slashes.
    """
    text = value.strip()
    try:
        parts = urlsplit(text if "://" in text else f"//{text}")
        host = (parts.hostname or "").lower()
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:  # a malformed port or IPv6 literal: no shop of ours is named that
        return ""
    path = parts.path.strip("/")
    return f"{host}/{path}" if path else host


@dataclass
class Credentials:
    """A shop's secrets in clear text; only ever held in memory, sealed at rest."""

    webhook_secret: str
    access_token: str | None = None
    consumer_key: str | None = None
    consumer_secret: str | None = None


@dataclass
class Shop:
    id: str
    platform: Platform
    domain: str
    api_base_url: str
    credentials: Credentials = field(repr=False)
    notify_customer: bool = True
    active: bool = True
    created_at: datetime | None = None

    def check(self) -> None:
        """The credentials a platform needs for write-back (raises `InvalidShop`)."""
        if not self.domain or len(self.domain) > 255:
            raise InvalidShop("domain", "not a host name or site URL")
        if self.platform == "shopify" and not self.credentials.access_token:
            raise InvalidShop("access_token", "required for a Shopify shop")
        if self.platform == "woocommerce" and not (
            self.credentials.consumer_key and self.credentials.consumer_secret
        ):
            raise InvalidShop(
                "consumer_key", "consumer_key and consumer_secret are required for WooCommerce"
            )

    def public(self) -> dict[str, Any]:
        """What the API shows: never a secret, only whether one is set."""
        return {
            "id": self.id,
            "platform": self.platform,
            "domain": self.domain,
            "api_base_url": self.api_base_url,
            "notify_customer": self.notify_customer,
            "active": self.active,
            "has_access_token": bool(self.credentials.access_token),
            "has_consumer_key": bool(self.credentials.consumer_key),
            "created_at": self.created_at,
        }


WritebackKind = Literal["fulfil", "cancel", "refund"]


@dataclass(frozen=True)
class WritebackTask:
    """One thing a shop must be told, exactly once (its `key` is the idempotency key)."""

    id: int
    key: str
    kind: WritebackKind
    order_id: str
    shop_id: str
    external_id: str
    payload: dict[str, Any]
    attempts: int


def tracking_url(carrier: str, tracking_number: str) -> str | None:
    """The public tracking page of the usual carriers (None when we do not know one)."""
    pages = {
        "ups": "https://www.ups.com/track?tracknum={}",
        "usps": "https://tools.usps.com/go/TrackConfirmAction?tLabels={}",
        "fedex": "https://www.fedex.com/fedextrack/?trknbr={}",
        "dhl": "https://www.dhl.com/global-en/home/tracking.html?tracking-id={}",
        "sf-express": "https://www.sf-express.com/we/ow/chn/en/waybill/waybill-detail/{}",
        "yunexpress": "https://www.yuntrack.com/parcelTracking?id={}",
        "4px": "https://track.4px.com/#/result/0/{}",
    }
    page = pages.get(carrier.strip().lower().replace(" ", "-"))
    return page.format(tracking_number) if page else None
