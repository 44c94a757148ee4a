"""Suppliers and their offers as the admin API sees them; the catalogue's rules. No I/O."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.supplier.domain.errors import InvalidOffers
from services.supplier.domain.quality import ChargebackTally, QualityScore, QualityTally
from services.supplier.domain.routing_policy import Offer
from shared.money import minor_units

COUNTERS = ("decided", "accepted", "shipped", "shipped_on_time", "exceptions")
"""A supplier's track record, counted by this service (see `routing_policy.Track`)."""


@dataclass(frozen=True)
class Credentials:
    api_key: str
    webhook_secret: str


@dataclass(frozen=True)
class Supplier:
    id: str
    supplier_key: str
    name: str
    api_base_url: str
    priority: int
    ship_sla_hours: float
    active: bool
    rate_limit_per_s: float | None
    has_credentials: bool
    created_at: datetime


@dataclass(frozen=True)
class NewSupplier:
    name: str
    supplier_key: str
    api_base_url: str
    credentials: Credentials
    priority: int = 5
    ship_sla_hours: float = 48.0
    active: bool = True
    rate_limit_per_s: float | None = None


@dataclass(frozen=True)
class SupplierChanges:
    """Only the fields named in `fields` change (`rate_limit_per_s` may change to None)."""

    fields: frozenset[str]
    name: str | None = None
    api_base_url: str | None = None
    priority: int | None = None
    ship_sla_hours: float | None = None
    active: bool | None = None
    rate_limit_per_s: float | None = None
    credentials: Credentials | None = None

    EDITABLE = frozenset(
        {"name", "api_base_url", "priority", "ship_sla_hours", "active", "rate_limit_per_s"}
    )


def cost_precision_error(offer: Offer) -> str | None:
    """Costs may carry two more decimals than the currency's minor unit, no more."""
    exponent = offer.unit_cost.normalize().as_tuple().exponent
    places = minor_units(offer.currency) + 2
    if isinstance(exponent, int) and -exponent > places:
        return f"{offer.currency} costs have at most {places} decimals"
    return None


def check_offers(offers: Sequence[Offer]) -> None:
    """One supplier's offers, as one upsert: costs within precision, each SKU once."""
    problems = [
        {"field": f"body.{i}.unit_cost", "reason": err}
        for i, o in enumerate(offers)
        if (err := cost_precision_error(o))
    ]
    seen: dict[str, int] = {}
    for i, o in enumerate(offers):
        if o.sku in seen:
            problems.append(
                {"field": f"body.{i}.sku", "reason": f"duplicate of item {seen[o.sku]}"}
            )
        seen.setdefault(o.sku, i)
    if problems:
        raise InvalidOffers(problems)


@dataclass(frozen=True)
class Scorecard:
    """A supplier's measured performance."""

    supplier_id: str
    orders: int
    decided: int
    accepted: int
    confirmation_rate: float | None
    median_confirm_seconds: float | None
    shipped: int
    on_time_ship_rate: float | None
    exceptions: int
    quality: QualityScore | None = None
    chargebacks: ChargebackTally | None = None

    @classmethod
    def measure(
        cls,
        supplier_id: str,
        orders: int,
        counts: Mapping[str, int],
        confirm_seconds: Sequence[float],
        quality: QualityTally | None = None,
        chargebacks: ChargebackTally | None = None,
    ) -> Scorecard:
        decided, shipped = counts["decided"], counts["shipped"]
        return cls(
            supplier_id=supplier_id,
            orders=orders,
            decided=decided,
            accepted=counts["accepted"],
            confirmation_rate=round(counts["accepted"] / decided, 4) if decided else None,
            median_confirm_seconds=(
                round(statistics.median(confirm_seconds), 3) if confirm_seconds else None
            ),
            shipped=shipped,
            on_time_ship_rate=round(counts["shipped_on_time"] / shipped, 4) if shipped else None,
            exceptions=counts["exceptions"],
            quality=QualityScore.measure(quality or QualityTally(), shipped),
            chargebacks=chargebacks or ChargebackTally(),
        )
