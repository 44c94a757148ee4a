"""The Order aggregate to and from its rows: PII encrypted on the way in, decrypted (or
shown redacted) on the way out. No queries here; `orders.OrderRepository` runs them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from services.order.domain import (
    Address,
    Allocation,
    Contact,
    Hold,
    LineStage,
    Order,
    OrderLine,
    Shipment,
)
from services.order.pii import PiiCipher
from services.order.tables import customer_order
from shared.db import aware
from shared.events import HoldReason

REDACTED = "[redacted]"

PII_COLUMNS = ("customer_name", "email", "phone", "ship_line1", "ship_line2")
"""The encrypted columns of `customer_order`."""

LEAN_COLUMNS = tuple(c for c in customer_order.c if c.name not in (*PII_COLUMNS, "email_index"))
"""The `customer_order` columns an order loaded without its PII reads (no ciphertext, no
blind index): all its supply-chain events need."""


def order_values(order: Order, cipher: PiiCipher) -> dict[str, Any]:
    """The `customer_order` row of a new order."""
    c, s, enc = order.customer, order.shipping, cipher.encrypt
    return dict(
        id=order.id,
        channel=order.channel,
        external_id=order.external_id,
        shop_id=order.shop_id or "",
        currency=order.currency,
        status=order.status.value,
        delayed=order.delayed,
        customer_name=enc(c.name or None, "customer_name"),  # a marketplace order may lack it
        email=enc(c.email or None, "email"),
        email_index=cipher.email_index(c.email) if c.email else None,
        phone=enc(c.phone, "phone"),
        locale=c.locale,
        ship_line1=enc(s.line1 or None, "ship_line1"),
        ship_line2=enc(s.line2, "ship_line2"),
        ship_city=s.city,
        ship_region=s.region,
        ship_postal_code=s.postal_code,
        ship_country=s.country,
        state=state_values(order),
        holds=hold_values(order),
        created_at=order.created_at,
        updated_at=order.created_at,
    )


def line_values(order: Order) -> list[dict[str, Any]]:
    """The `order_line` rows of a new order, in position order."""
    return [
        {
            "id": ln.line_id,
            "order_id": order.id,
            "position": i,
            "sku": ln.sku,
            "quantity": ln.quantity,
            "unit_price": ln.unit_price,
            "stage": int(ln.stage),
        }
        for i, ln in enumerate(order.lines, start=1)
    ]


def state_values(order: Order) -> dict[str, Any]:
    """The aggregate's bookkeeping that has no column of its own (the `state` JSON)."""
    return {
        "delayed_suppliers": sorted(order.delayed_suppliers),
        "early_deliveries": {k: v.isoformat() for k, v in order.early_deliveries.items()},
        "released_suppliers": sorted(order.released_suppliers),
        "placed": order.placed,
        "external_ids": {  # the platform ids of SKU-less marketplace lines
            ln.line_id: list(ln.external_ids) for ln in order.lines if ln.external_ids is not None
        },
    }


def hold_values(order: Order) -> list[dict[str, str]]:
    """The `holds` JSON column: the holds standing, oldest first."""
    return [
        {"reason": h.reason.value, "note": h.note, "since": h.since.isoformat()}
        for h in order.holds
    ]


def address_values(order: Order, cipher: PiiCipher) -> dict[str, Any]:
    """The recipient, shipping address and phone columns (name, street and phone encrypted)."""
    s, enc = order.shipping, cipher.encrypt
    return dict(
        customer_name=enc(order.customer.name or None, "customer_name"),
        phone=enc(order.customer.phone, "phone"),
        ship_line1=enc(s.line1, "ship_line1"),
        ship_line2=enc(s.line2, "ship_line2"),
        ship_city=s.city,
        ship_region=s.region,
        ship_postal_code=s.postal_code,
        ship_country=s.country,
    )


def reencrypted(row: Any, cipher: PiiCipher) -> dict[str, Any]:
    """The PII columns of `row` under the cipher's active key (and a fresh e-mail index)."""
    plain = {col: cipher.decrypt(getattr(row, col), col) for col in PII_COLUMNS}
    values: dict[str, Any] = {col: cipher.encrypt(plain[col], col) for col in PII_COLUMNS}
    if plain["email"] is not None:
        values["email_index"] = cipher.email_index(plain["email"])
    return values


def _external_ids(state: dict[str, Any], line_id: str) -> tuple[str, ...] | None:
    ids = (state.get("external_ids") or {}).get(line_id)
    return None if ids is None else tuple(ids)


def _moment(value: datetime) -> datetime:
    return aware(value) or value


def _contact(row: Any, redacted: bool, cipher: PiiCipher | None) -> Contact:
    if cipher is None:
        return Contact(name="", email="", phone=None, locale=row.locale)
    if redacted:
        return Contact(name=REDACTED, email=REDACTED, phone=None, locale=row.locale)
    dec = cipher.decrypt
    return Contact(
        name=dec(row.customer_name, "customer_name") or "",
        email=dec(row.email, "email") or "",
        phone=dec(row.phone, "phone"),
        locale=row.locale,
    )


def _street(row: Any, redacted: bool, cipher: PiiCipher | None) -> str:
    if cipher is None:
        return ""
    return REDACTED if redacted else (cipher.decrypt(row.ship_line1, "ship_line1") or "")


def _address(row: Any, redacted: bool, cipher: PiiCipher | None) -> Address:
    return Address(
        line1=_street(row, redacted, cipher),
        line2=None if redacted or cipher is None else cipher.decrypt(row.ship_line2, "ship_line2"),
        city=row.ship_city,
        region=row.ship_region,
        postal_code=row.ship_postal_code,
        country=row.ship_country,
    )


@dataclass(frozen=True)
class CustomerContact:
    """An order's customer contact as other services read it (no lines), and its ship-to
    address when asked for."""

    order_id: str
    customer: Contact
    redacted: bool
    shipping: Address | None = None


def contact_from_row(row: Any, cipher: PiiCipher, *, ship_to: bool = False) -> CustomerContact:
    """An order's customer contact from its `customer_order` row (only what it needs)."""
    redacted = row.redacted_at is not None
    shipping = _address(row, redacted, cipher) if ship_to else None
    return CustomerContact(row.id, _contact(row, redacted, cipher), redacted, shipping)


def order_from_rows(
    row: Any,
    lines: Sequence[Any],
    allocations: Sequence[Any],
    shipments: Sequence[Any],
    cipher: PiiCipher | None,
) -> Order:
    """The aggregate from its `customer_order` row and child rows.

    Without a `cipher` the row holds only `LEAN_COLUMNS`: name, e-mail, phone and street
    are left blank (and `OrderRepository.save_address` refuses such an order)."""
    state = row.state or {}
    redacted = row.redacted_at is not None
    return Order(
        id=row.id,
        channel=row.channel,
        external_id=row.external_id,
        shop_id=row.shop_id or None,
        currency=row.currency,
        customer=_contact(row, redacted, cipher),
        shipping=_address(row, redacted, cipher),
        lines=[
            OrderLine(
                line_id=ln.id,
                sku=ln.sku,
                quantity=ln.quantity,
                unit_price=Decimal(ln.unit_price),
                stage=LineStage(ln.stage),
                supplier_id=ln.supplier_id,
                unit_cost=None if ln.unit_cost is None else Decimal(ln.unit_cost),
                routing_failed=ln.routing_failed,
                waiting=ln.waiting,
                external_ids=_external_ids(state, ln.id),
            )
            for ln in lines
        ],
        created_at=_moment(row.created_at),
        cancelled_at=aware(row.cancelled_at),
        cancel_reason=row.cancel_reason,
        delayed=row.delayed,
        delayed_suppliers=set(state.get("delayed_suppliers", [])),
        released_suppliers=set(state.get("released_suppliers", [])),
        early_deliveries={
            k: datetime.fromisoformat(v) for k, v in state.get("early_deliveries", {}).items()
        },
        allocations=[
            Allocation(
                a.supplier_id,
                a.supplier_order_ref,
                list(a.line_ids),
                a.currency,
                _moment(a.ship_by),
                _moment(a.confirmed_at),
            )
            for a in allocations
        ],
        shipments=[
            Shipment(
                s.supplier_id,
                s.carrier,
                s.tracking_number,
                list(s.line_ids),
                _moment(s.dispatched_at),
                aware(s.delivered_at),
            )
            for s in shipments
        ],
        redacted=redacted,
        holds=[
            Hold(HoldReason(h["reason"]), h["note"], datetime.fromisoformat(h["since"]))
            for h in (row.holds or [])
        ],
        placed=bool(state.get("placed", True)),
        refunded_total=Decimal(row.refunded_total or 0),
    )
