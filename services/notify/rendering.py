"""Templates: one set per notice kind and locale, HTML autoescaped, text never escaped."""

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

from services.notify.domain import DEFAULT_LOCALE, LOCALES, Kind, normalise_locale

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
        )

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
}
"""What the preview endpoint fills a template with."""
