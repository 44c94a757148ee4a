"""Helpers for the supplier service tests: suppliers, offers, simulator control, orders."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import httpx

from shared.events import Envelope, OrderPlaced, PlacedLine, new_envelope
from shared.testing import eventually

ADMIN = {"X-API-Key": "dev-api-key"}


async def add_supplier(
    svc, key: str, *, priority: int = 5, sla: float = 48.0, rate=None, offers=()
) -> str:
    sim = svc.simulator.url
    body = {
        "name": key.title(),
        "supplier_key": key,
        "api_base_url": f"{sim}/{key}",
        "credentials": {"api_key": f"sim-key-{key}", "webhook_secret": f"sim-secret-{key}"},
        "priority": priority,
        "ship_sla_hours": sla,
        "rate_limit_per_s": rate,
    }
    created = await svc.client.post("/v1/suppliers", json=body, headers=ADMIN)
    assert created.status_code == 201, created.text
    supplier_id = created.json()["id"]
    items = [
        {
            "sku": sku,
            "supplier_sku": f"{key.upper()}-{sku}",
            "unit_cost": cost,
            "currency": "USD",
            "stock": stock,
            "lead_time_hours": lead,
        }
        for sku, cost, stock, lead in offers
    ]
    if items:
        assert (
            await svc.client.put(f"/v1/suppliers/{supplier_id}/offers", json=items, headers=ADMIN)
        ).status_code == 200
    return supplier_id


async def control(svc, key: str, **settings) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.put(f"{svc.simulator.url}/_control/{key}", json=settings)
        assert response.status_code == 200, response.text


async def sim_orders(svc, key: str) -> list[dict]:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{svc.simulator.url}/_control/{key}/orders")).json()["items"]


def placed(*lines: tuple[str, int, str]) -> Envelope:
    order_id = f"ord_{uuid.uuid4().hex[:12]}"
    return new_envelope(
        OrderPlaced(
            order_id=order_id,
            channel="storefront",
            currency="USD",
            lines=[
                PlacedLine(line_id=f"{order_id}-{i}", sku=sku, quantity=q, unit_price=Decimal(p))
                for i, (sku, q, p) in enumerate(lines, start=1)
            ],
            shipping_country="US",
            shipping_postal_code="10001",
            placed_at=datetime.now(UTC),
        )
    )


async def allocations(svc, order_id: str) -> list[dict]:
    return (
        await svc.client.get("/v1/allocations", params={"order_id": order_id}, headers=ADMIN)
    ).json()["items"]


PROGRESS = ["to_send", "sending", "received", "accepted", "dispatched", "delivered"]


def reached(state: str, wanted: str) -> bool:
    """`accepted` is reached by an order that has since been dispatched, and so on."""
    if wanted in PROGRESS and state in PROGRESS:
        return PROGRESS.index(state) >= PROGRESS.index(wanted)
    return state == wanted


async def states(svc, order_id: str, *wanted: str):
    async def probe():
        items = await allocations(svc, order_id)
        got = {a["state"] for a in items}
        return items if items and all(any(reached(s, w) for s in got) for w in wanted) else None

    return await eventually(probe, timeout=30, what=f"allocations in {wanted}")


def delays(records) -> list[tuple[str, str, str]]:
    """(order id, reason, severity) of each distinct `shipment-delayed` among `records`.

    Delivery is at least once (a relay that retries a send the broker did take sends it
    again) and consumers dedupe on the envelope id, so a repeated envelope is one delay.
    """
    out, seen = [], set()
    for r in records:
        e = Envelope.from_bytes(r.value)
        if e.id not in seen:
            seen.add(e.id)
            out.append((e.subject, e.data["reason"], e.data["severity"]))
    return out
