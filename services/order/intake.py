"""Intake rules: which holds a new order starts with (its address, its value)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from services.order.addresses import address_problems, missing_recipient
from services.order.domain import PlaceOrder
from shared.events import HoldReason
from shared.money import format_amount


@dataclass(frozen=True)
class IntakePolicy:
    """`high_value_limits`: per currency, the total above which an order is held."""

    high_value_limits: Mapping[str, Decimal] = field(default_factory=dict)

    def holds_for(self, cmd: PlaceOrder) -> list[tuple[HoldReason, str]]:
        """The holds a new order starts with, each with its note (field and rule, no PII)."""
        holds: list[tuple[HoldReason, str]] = []
        problems = missing_recipient(cmd.customer, cmd.shipping)
        if not any(p.field == "shipping_address" for p in problems):  # there is one to judge
            problems += address_problems(cmd.shipping, cmd.customer.phone)
        if problems:
            holds.append((HoldReason.ADDRESS_INVALID, "; ".join(map(str, problems))[:1000]))
        limit = self.high_value_limits.get(cmd.currency)
        total = sum((ln.unit_price * ln.quantity for ln in cmd.lines), Decimal(0))
        if limit is not None and total > limit:
            cur = cmd.currency
            holds.append(
                (
                    HoldReason.HIGH_VALUE,
                    f"total {format_amount(total, cur)} {cur} is above the limit "
                    f"{format_amount(limit, cur)} {cur}",
                )
            )
        return holds
