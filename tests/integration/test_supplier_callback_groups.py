"""Callbacks posted together to the supplier service over HTTP are committed in groups
(`DROPSHIP_SUPPLIER_CALLBACK_LINGER_MS`): each sender gets its own answer, each order is
confirmed once, and `/metrics` shows fewer groups than callbacks."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_supplier_callback_journal import _signed
from tests.integration.test_supplier_faults import confirmations, supplier_service
from tests.support.kafka import publish_envelopes
from tests.support.supplier import add_supplier, control, placed, states

pytestmark = pytest.mark.integration
ORDERS = 4


async def group_commits(svc) -> tuple[float, float]:
    """(groups, items) of the supplier callbacks' group commit, from `/metrics`."""
    text = (await svc.client.get("/metrics")).text
    found = {"groups": 0.0, "items": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("writer") != "supplier_callbacks":
                continue
            for name in found:
                if sample.name == f"dropship_group_commit_{name}_total":
                    found[name] = sample.value
    return found["groups"], found["items"]


async def test_callbacks_posted_together_are_committed_in_groups_each_answered(
    database_url, settings_for, simulator, order_contacts, broker
):
    async with supplier_service(
        database_url,
        settings_for,
        simulator,
        order_contacts,
        supplier_check_after_s=3600,  # no status checks: only our callbacks decide
        supplier_callback_linger_ms=50,
    ) as svc:
        sid = await add_supplier(svc, "grouped", offers=[("MUG", "3.00", 100, 24)])
        await control(svc, "grouped", lose_callbacks=True, never_ship=True)
        events = [placed(("MUG", 1, "12.50")) for _ in range(ORDERS)]
        await publish_envelopes(broker.bootstrap, events)
        allocations = [(await states(svc, e.subject, "received"))[0] for e in events]
        posts = []
        for alloc in allocations:
            payload = {
                "type": "accepted",
                "reference": alloc["supplier_order_id"],
                "supplier_order_ref": alloc["supplier_order_ref"] or "SIM-X",
            }
            posts.append(_signed("sim-secret-grouped", payload))
        posts.append(posts[0])  # the first delivery again: a sender that heard no answer
        groups_before, items_before = await group_commits(svc)

        answers = await asyncio.gather(
            *(
                svc.client.post(f"/v1/webhooks/suppliers/{sid}", content=body, headers=headers)
                for body, headers in posts
            )
        )

        assert [a.status_code for a in answers] == [200] * (ORDERS + 1), answers[0].text
        statuses = sorted(a.json()["status"] for a in answers)
        assert statuses == ["accepted"] * ORDERS + ["duplicate"]
        for event in events:
            await states(svc, event.subject, "accepted")
            assert await confirmations(svc, event.subject) == 1
        groups, items = await group_commits(svc)
        assert items - items_before == ORDERS + 1
        assert groups - groups_before < ORDERS + 1, "every callback committed alone"
