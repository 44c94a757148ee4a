"""Supplier quality over the broker: defect returns and chargebacks counted once each (however
often delivered), shown on the scorecard and the chargeback list, and sinking the supplier in
routing. Supplier service + simulator over real HTTP, PostgreSQL and SQLite."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from shared.events import (
    CostBearer,
    EventData,
    RefundIssued,
    ReturnAuthorized,
    ReturnLine,
    ReturnReason,
    new_envelope,
)
from shared.testing import eventually
from tests.support.kafka import publish_envelopes
from tests.support.supplier import ADMIN, add_supplier, allocations, placed


def returned(supplier_id: str, reason: ReturnReason, quantity: int = 1) -> ReturnAuthorized:
    order_id = f"ord_{uuid.uuid4().hex[:10]}"
    return ReturnAuthorized(
        order_id=order_id,
        return_id=f"ret_{uuid.uuid4().hex[:10]}",
        supplier_id=supplier_id,
        reason=reason,
        lines=[
            ReturnLine(
                line_id=f"{order_id}-1", sku="MUG", quantity=quantity, supplier_id=supplier_id
            )
        ],
        rma="RMA-1",
        return_address="Returns, 1 Dock Rd",
        authorized_at=datetime.now(UTC),
    )


def refund(
    supplier_id: str, amount: str, currency: str = "USD", bearer: CostBearer = CostBearer.SUPPLIER
) -> RefundIssued:
    return RefundIssued(
        order_id=f"ord_{uuid.uuid4().hex[:10]}",
        refund_id=f"rf_{uuid.uuid4().hex[:10]}",
        amount=Decimal(amount),
        currency=currency,
        reason=ReturnReason.DAMAGED_IN_TRANSIT,
        cost_bearer=bearer,
        supplier_id=supplier_id,
        channel="storefront",
        issued_at=datetime.now(UTC),
    )


async def publish_twice_and_again(bootstrap: str, events: list[EventData]) -> None:
    """Each event delivered twice in one envelope, then once more in a fresh one."""
    first = [new_envelope(e) for e in events]
    await publish_envelopes(bootstrap, [e for e in first for _ in range(2)])
    await publish_envelopes(bootstrap, [new_envelope(e) for e in events])


async def scorecard(svc: Any, supplier_id: str) -> dict[str, Any]:
    response = await svc.client.get(f"/v1/suppliers/{supplier_id}/scorecard", headers=ADMIN)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def routed_to(svc: Any, bootstrap: str) -> str:
    event = placed(("MUG", 1, "10.00"))
    await publish_envelopes(bootstrap, [event])

    async def allocated() -> list[dict[str, Any]] | None:
        return await allocations(svc, event.subject) or None

    items = await eventually(allocated, what="order routed")
    return str(items[0]["supplier_id"])


async def test_defects_and_chargebacks_count_once_show_on_the_scorecard_and_sink_routing(
    supplier, broker
):
    preferred = await add_supplier(supplier, "acme", priority=4, offers=[("MUG", "4.00", 100, 24)])
    other = await add_supplier(supplier, "bolt", priority=5, offers=[("MUG", "4.00", 100, 24)])
    assert await routed_to(supplier, broker.bootstrap) == preferred

    cash = refund(preferred, "6.25")
    events: list[EventData] = [
        returned(preferred, ReturnReason.DAMAGED_IN_TRANSIT, quantity=2),
        returned(preferred, ReturnReason.NOT_AS_DESCRIBED),
        returned(preferred, ReturnReason.DAMAGED_IN_TRANSIT),
        returned(preferred, ReturnReason.CHANGED_MIND),  # a return, not a defect
        cash,
        refund(preferred, "7.5", "EUR"),
        refund(preferred, "99.00", bearer=CostBearer.MERCHANT),  # the merchant bears it
    ]
    await publish_twice_and_again(broker.bootstrap, events)

    async def counted() -> dict[str, Any] | None:
        card = await scorecard(supplier, preferred)
        done = card["quality"]["returns"] == 4 and card["chargebacks"]["count"] == 2
        return card if done else None

    card = await eventually(counted, what="returns and chargebacks counted")
    quality = card["quality"]
    assert (quality["defective_orders"], quality["defective_units"]) == (3, 4)
    assert quality["returned_units"] == 5 and quality["quality_score"] < 1
    assert card["chargebacks"] == {"count": 2, "totals": {"EUR": "7.50", "USD": "6.25"}}
    clean = await scorecard(supplier, other)
    assert clean["quality"]["defective_orders"] == 0 and clean["quality"]["quality_score"] == 1
    assert clean["chargebacks"] == {"count": 0, "totals": {}}

    # the once-preferred supplier now sinks below the otherwise equal one
    assert await routed_to(supplier, broker.bootstrap) == other

    url = f"/v1/suppliers/{preferred}/chargebacks"
    page = (await supplier.client.get(url, params={"limit": 1}, headers=ADMIN)).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    rest = await supplier.client.get(
        url, params={"limit": 1, "cursor": page["next_cursor"]}, headers=ADMIN
    )
    items = page["items"] + rest.json()["items"]
    assert rest.json()["next_cursor"] is None
    usd = next(i for i in items if i["currency"] == "USD")
    assert usd == {
        "refund_id": cash.refund_id,
        "supplier_id": preferred,
        "order_id": cash.order_id,
        "return_id": None,
        "amount": "6.25",
        "currency": "USD",
        "reason": "damaged_in_transit",
        "issued_at": usd["issued_at"],
    }
    assert datetime.fromisoformat(usd["issued_at"]) - cash.issued_at < timedelta(seconds=1)


async def test_the_chargeback_list_refuses_what_it_cannot_answer(supplier):
    sid = await add_supplier(supplier, "acme")
    bad = await supplier.client.get(
        f"/v1/suppliers/{sid}/chargebacks", params={"cursor": "nope"}, headers=ADMIN
    )
    assert bad.status_code == 422 and "query.cursor" in bad.text
    missing = await supplier.client.get("/v1/suppliers/sup_nobody/chargebacks", headers=ADMIN)
    assert missing.status_code == 404
    anonymous = await supplier.client.get(f"/v1/suppliers/{sid}/chargebacks")
    assert anonymous.status_code == 401
