"""What after-sales notices (returns, refunds) are filled with, and money as a customer reads it."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from services.notify.domain import FactLine, Kind, Notification, OrderFact
from shared.money import minor_units

AFTERSALES_KINDS = frozenset(
    {Kind.RETURN_REQUESTED, Kind.RETURN_AUTHORIZED, Kind.RETURN_REJECTED, Kind.REFUND_ISSUED}
)

# CLDR's narrow-enough symbols for the currencies shops here sell in; others print their code
_SYMBOLS = {
    "en": {
        "USD": "$",
        "EUR": "€",
        "GBP": "£",
        "JPY": "¥",
        "CNY": "CN¥",
        "HKD": "HK$",
        "CAD": "CA$",
        "AUD": "A$",
    },
    "zh-CN": {
        "USD": "US$",
        "EUR": "€",
        "GBP": "£",
        "JPY": "JP¥",
        "CNY": "¥",
        "HKD": "HK$",
        "CAD": "CA$",
        "AUD": "AU$",
    },
}


def format_money(amount: object, currency: str, locale: str = "en") -> str:
    """`$1,234.50` (en), `US$1,234.50` (zh-CN); `CHF 12.00` for a currency without a symbol.

    Exact: the amount is padded to the currency's minor units, never rounded (a refund of
    `10.005` would print all three decimals rather than a cent it did not pay).
    """
    try:
        value = Decimal(str(amount))
    except InvalidOperation:
        return f"{amount} {currency}"
    digits = minor_units(currency)
    exponent = value.as_tuple().exponent
    if isinstance(exponent, int) and -exponent < digits:
        value = value.quantize(Decimal(1).scaleb(-digits))
    sign, value = ("-", -value) if value < 0 else ("", value)
    number = f"{value:,f}"
    symbol = _SYMBOLS.get(locale, _SYMBOLS["en"]).get(currency.upper())
    if symbol is None:
        return f"{sign}{currency.upper()} {number}"
    return f"{sign}{symbol}{number}"


def aftersales_context(
    kind: Kind, notice: Notification, parts: list[dict[str, Any]], fact: OrderFact | None
) -> dict[str, Any]:
    """The fields a return or refund notice shows; `parts[0]` is what its event said."""
    part = parts[0] if parts else {}
    context: dict[str, Any] = {
        "return_reason": part.get("return_reason", ""),
        "items": [dict(item) for item in part.get("items", [])],
    }
    if kind is Kind.RETURN_AUTHORIZED:
        context["rma"] = part.get("rma", "")
        context["return_address"] = part.get("return_address", "")
    elif kind is Kind.RETURN_REJECTED:
        context["note"] = part.get("note", "")
    elif kind is Kind.REFUND_ISSUED:
        context["amount"] = part.get("amount", "0")
        context["currency"] = part.get("currency", fact.currency if fact else "")
        skus: dict[str, FactLine] = {ln.line_id: ln for ln in (fact.lines if fact else [])}
        context["items"] = [
            {"sku": skus[ln["line_id"]].sku, "quantity": ln["quantity"]}
            for ln in part.get("lines", [])
            if ln["line_id"] in skus
        ]
    return context


SAMPLES: dict[Kind, dict[str, Any]] = {
    Kind.RETURN_REQUESTED: {
        "return_reason": "damaged_in_transit",
        "items": [{"sku": "MUG-1", "quantity": 1}],
    },
    Kind.RETURN_AUTHORIZED: {
        "return_reason": "damaged_in_transit",
        "rma": "RMA-20261203-0042",
        "return_address": "Returns dept., 88 Harbour Rd, Shenzhen 518000, CN",
        "items": [{"sku": "MUG-1", "quantity": 1}],
    },
    Kind.RETURN_REJECTED: {"note": "The item was bought more than 30 days ago."},
    Kind.REFUND_ISSUED: {
        "return_reason": "damaged_in_transit",
        "amount": "1234.5",
        "currency": "USD",
        "items": [{"sku": "MUG-1", "quantity": 1}],
    },
}
"""What the preview endpoint fills an after-sales template with."""
