"""Templates: one set per notice kind and locale, HTML autoescaped, text never escaped;
and what a notice fills them with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    select_autoescape,
)

from services.notify.aftersales_text import AFTERSALES_KINDS, aftersales_context, format_money
from services.notify.aftersales_text import SAMPLES as AFTERSALES_SAMPLES
from services.notify.domain import (
    DEFAULT_LOCALE,
    LOCALES,
    Kind,
    Notification,
    OrderFact,
    normalise_locale,
)

TEMPLATES = Path(__file__).parent / "templates"


@dataclass(frozen=True)
class Rendered:
    locale: str
    subject: str
    text: str
    html: str
    sms: str


def format_date(value: datetime | None, locale: str) -> str | None:
    """A date a customer reads without thinking: `Tuesday 24 November 2026`, `2026年11月24日`."""
    if value is None:
        return None
    if locale == "zh-CN":
        return f"{value.year}年{value.month}月{value.day}日"
    return f"{value:%A} {value.day} {value:%B %Y}"


class Renderer:
    def __init__(self, directory: Path = TEMPLATES) -> None:
        self.env = Environment(
            loader=FileSystemLoader(directory),
            # decided per template name: HTML escapes, a .txt template never does
            autoescape=select_autoescape(["html"], default_for_string=False, default=False),
            undefined=StrictUndefined,
            keep_trailing_newline=False,
            trim_blocks=False,
            # templates ship with the code: compiled once, no stat of each file per render
            auto_reload=False,
        )
        self.env.filters["money"] = format_money

    def render(self, kind: Kind, locale: str | None, context: dict[str, Any]) -> Rendered:
        """Render every part of `kind` in the customer's locale (falling back to English)."""
        chosen = normalise_locale(locale)
        if chosen not in LOCALES:
            chosen = DEFAULT_LOCALE
        values = {
            "items": [],
            "customer_name": None,
            "expected_by": None,
            "reason": "",
            "all_lines": True,
            **context,
            "locale": chosen,
        }
        if isinstance(values.get("expected_by"), datetime):
            values["expected_by"] = format_date(values["expected_by"], chosen)
        try:
            body = self.env.get_template(f"{chosen}/_{kind.value}_body.txt")
            values["body"] = body.render(values).strip()
        except TemplateNotFound:
            pass
        subject = self._part(chosen, kind, "subject.txt", values)
        values["subject"] = " ".join(subject.split())
        return Rendered(
            locale=chosen,
            subject=values["subject"],
            text=self._part(chosen, kind, "txt", values).strip() + "\n",
            html=self._part(chosen, kind, "html", values),
            sms=" ".join(self._part(chosen, kind, "sms.txt", values).split()),
        )

    def _part(self, locale: str, kind: Kind, suffix: str, values: dict[str, Any]) -> str:
        return self.env.get_template(f"{locale}/{kind.value}.{suffix}").render(values)


def notice_context(
    kind: Kind,
    notice: Notification,
    parts: list[dict[str, Any]],
    fact: OrderFact | None,
    *,
    merchant: str,
    support_email: str,
) -> dict[str, Any]:
    """What a notice's templates are filled with (all but the customer's name).

    `parts` are what happened (digested: several suppliers' delays in one notice);
    `fact` is the order as it was placed, for the items and the shop's order number.
    """
    lines = {line.line_id: line for line in (fact.lines if fact else [])}
    line_ids: list[str] = []
    for part in parts:
        line_ids.extend(i for i in part.get("line_ids", []) if i not in line_ids)
    context: dict[str, Any] = {
        "merchant": merchant,
        "support_email": support_email,
        "order_ref": (fact.external_id if fact and fact.external_id else notice.order_id),
        "reason": notice.reason,
        "items": [
            {"sku": lines[i].sku, "quantity": lines[i].quantity} for i in line_ids if i in lines
        ],
        "all_lines": bool(lines) and set(lines) <= set(line_ids),
    }
    if kind is Kind.SHIPMENT_DELAYED:
        dates = [datetime.fromisoformat(p["expected_by"]) for p in parts if p.get("expected_by")]
        context["expected_by"] = max(dates) if dates else None
    elif kind is Kind.SHIPMENT_DISPATCHED:
        context["carrier"] = parts[0]["carrier"]
        context["tracking_number"] = parts[0]["tracking_number"]
    elif kind is Kind.ORDER_CANCELLED:
        context["cancel_reason"] = parts[0].get("cancel_reason") if parts else None
    elif kind is Kind.ORDER_ROUTING_FAILED:
        context["routing_reason"] = parts[0].get("routing_reason") if parts else None
        if not lines:
            context["all_lines"] = True
    elif kind in AFTERSALES_KINDS:
        context.update(aftersales_context(kind, notice, parts, fact))
    return context


SAMPLES: dict[Kind, dict[str, Any]] = {
    Kind.SHIPMENT_DELAYED: {
        "reason": "no_tracking_by_deadline",
        "items": [{"sku": "MUG-1", "quantity": 2}, {"sku": "LAMP-3", "quantity": 1}],
        "expected_by": datetime(2026, 11, 24, 12, 0),
    },
    Kind.SHIPMENT_DISPATCHED: {
        "carrier": "UPS",
        "tracking_number": "1Z999AA10123456784",
        "items": [{"sku": "MUG-1", "quantity": 2}],
    },
    Kind.ORDER_CANCELLED: {"cancel_reason": "customer_request"},
    Kind.ORDER_ROUTING_FAILED: {
        "routing_reason": "out_of_stock",
        "items": [{"sku": "LAMP-3", "quantity": 1}],
        "all_lines": False,
    },
    **AFTERSALES_SAMPLES,
}
"""What the preview endpoint fills a template with."""


def sample_context(kind: Kind, locale: str) -> dict[str, Any]:
    """The whole context a preview renders `kind` with."""
    return {
        "merchant": "Dropship Demo Store",
        "support_email": "support@dropship.example",
        "order_ref": "#1042",
        "customer_name": "Alex Doe" if not locale.lower().startswith("zh") else "张三",
        **SAMPLES[kind],
    }
