"""A human routes a needs_attention line again: to anyone, or to a chosen supplier."""

from __future__ import annotations

from tests.support.kafka import consume, publish_envelopes
from tests.support.supplier import ADMIN, add_supplier, allocations, control, placed, states


def _route(order_id: str, line_id: str) -> str:
    return f"/v1/orders/{order_id}/lines/{line_id}/route"


async def test_a_line_that_needs_attention_is_routed_again_and_confirmed(supplier, broker):
    sid = await add_supplier(supplier, "picky", offers=[("MUG", "4.00", 100, 24)])
    await control(supplier, "picky", reject_rate=1.0)
    event = placed(("MUG", 1, "12.50"))
    order_id, line_id = event.subject, f"{event.subject}-1"
    await publish_envelopes(broker.bootstrap, [event])
    await consume(broker.bootstrap, "order-routing-failed", 1, within=30)

    await control(supplier, "picky", reject_rate=0.0)
    response = await supplier.client.post(_route(order_id, line_id), json={}, headers=ADMIN)
    assert response.status_code == 202, response.text
    assert response.json()["supplier_id"] == sid and response.json()["state"] == "sending"
    busy = await supplier.client.post(_route(order_id, line_id), json={}, headers=ADMIN)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "line_busy"
    await states(supplier, order_id, "accepted")


async def test_routing_to_a_chosen_supplier_checks_offer_and_margin(supplier, broker):
    await add_supplier(supplier, "gone", offers=[("MUG", "4.00", 100, 24)])
    dear = await add_supplier(supplier, "dear", offers=[("MUG", "20.00", 100, 24)])
    other = await add_supplier(supplier, "other", offers=[("TEA", "1.00", 100, 24)])
    await control(supplier, "gone", reject_rate=1.0)
    event = placed(("MUG", 1, "12.50"))
    order_id, line_id = event.subject, f"{event.subject}-1"
    await publish_envelopes(broker.bootstrap, [event])
    await consume(broker.bootstrap, "order-routing-failed", 1, within=30)
    before = await allocations(supplier, order_id)

    post = supplier.client.post
    no_offer = await post(_route(order_id, line_id), json={"supplier_id": other}, headers=ADMIN)
    assert no_offer.status_code == 422 and "supplier_id" in no_offer.json()["error"]["message"]
    margin = await post(_route(order_id, line_id), json={"supplier_id": dear}, headers=ADMIN)
    assert (
        margin.status_code == 409
        and margin.json()["error"]["details"]["reason"] == "negative_margin"
    )
    assert (await post(_route("ord_nope", line_id), json={}, headers=ADMIN)).status_code == 404
    assert (await post(_route(order_id, "nope"), json={}, headers=ADMIN)).status_code == 404
    bad = await post(_route(order_id, line_id), json={"supplier_id": ""}, headers=ADMIN)
    assert bad.status_code == 422 and "supplier_id" in bad.text
    extra = await post(_route(order_id, line_id), json={"supplier": dear}, headers=ADMIN)
    assert extra.status_code == 422 and "supplier" in extra.text
    assert (await post(_route(order_id, line_id), json={})).status_code == 401
    assert await allocations(supplier, order_id) == before, "refusals change nothing"

    accepted = await post(
        _route(order_id, line_id),
        json={"supplier_id": dear, "accept_negative_margin": True},
        headers=ADMIN,
    )
    assert accepted.status_code == 202, accepted.text
    items = await states(supplier, order_id, "accepted")
    assert any(i["supplier_id"] == dear and i["state"] != "rejected" for i in items)
