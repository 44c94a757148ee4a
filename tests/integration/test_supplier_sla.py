"""SLA clock, tracking updates, breaker failover, rate limits, admin API and CSV import."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import httpx
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from services.supplier.app import create_app
from services.supplier.settings import SupplierSettings
from services.supplier.tables import supplier as supplier_table
from shared.events import Envelope
from shared.infra import free_port
from shared.signing import sign_callback
from shared.testing import eventually
from tests.support.kafka import consume, publish_envelopes
from tests.support.services import served
from tests.support.supplier import (
    ADMIN,
    add_supplier,
    allocations,
    control,
    delays,
    placed,
    sim_orders,
    states,
)


async def test_sla_events_fire_once_each_even_across_a_restart(
    database_url, settings_for, simulator, broker, order_contacts
):
    url = await database_url("supplier")
    port = free_port()
    settings = settings_for(
        SupplierSettings,
        url,
        port=port,
        dispatcher_poll_s=0.2,
        sla_scan_interval_s=0.1,
        order_url=order_contacts.url,
    )
    sla_hours = 4 / 3600  # a 4-second window: at_risk at 3 s, deadline at 4 s, major at 8 s
    async with served(create_app, settings, port) as svc:
        svc.simulator = simulator
        await svc.runtime.bus.wait_connected()
        await add_supplier(svc, "slow", sla=sla_hours, offers=[("MUG", "3.00", 100, 24)])
        await control(svc, "slow", never_ship=True)
        event = placed(("MUG", 1, "12.50"))
        await publish_envelopes(broker.bootstrap, [event])
        await states(svc, event.subject, "accepted")
        first = await consume(broker.bootstrap, "shipment-delayed", 1, within=20)
        assert delays(first) == [(event.subject, "at_risk", "normal")]
    # the service goes down between at_risk and the deadline, and comes back
    async with served(create_app, settings, port) as svc:
        records = await consume(broker.bootstrap, "shipment-delayed", 3, within=30)
        assert delays(records) == [
            (event.subject, "at_risk", "normal"),
            (event.subject, "no_tracking_by_deadline", "urgent"),
            (event.subject, "no_tracking_by_deadline", "major"),
        ]
        await _quiet_period_proves_nothing_more(broker.bootstrap, svc)


async def _quiet_period_proves_nothing_more(bootstrap, svc) -> None:
    """After major, more scans (100 ms apart) must not emit anything."""
    scans_before = await _scan_count(svc)
    await eventually(lambda: _more_scans(svc, scans_before + 5), what="five more SLA scans")
    with pytest.raises(TimeoutError):
        await consume(bootstrap, "shipment-delayed", 4, within=1)


async def _scan_count(svc) -> float:
    return REGISTRY.get_sample_value("dropship_supplier_sla_scans_total") or 0.0


async def _more_scans(svc, n: int) -> bool:
    return await _scan_count(svc) >= n


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_tracking_updates_become_delays_and_deliveries(supplier, broker):
    await add_supplier(supplier, "ship", offers=[("MUG", "3.00", 100, 24)])
    await control(supplier, "ship", ship_after_s=0.2, deliver_after_s=None)
    event = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [event])
    [alloc] = await states(supplier, event.subject, "dispatched")
    [sim_order] = await sim_orders(supplier, "ship")
    tracking = sim_order["tracking_number"]

    async def post(status: str, delivery: str):
        body = json.dumps(
            {
                "carrier": sim_order["carrier"],
                "tracking_number": tracking,
                "status": status,
                # now: a movement days old would rightly make the lost-parcel clock fire
                "occurred_at": datetime.now(UTC).isoformat(),
            }
        ).encode()
        stamp = str(int(time.time()))
        sig = sign_callback("dev-tracking-secret", stamp, body)
        return await supplier.client.post(
            "/v1/webhooks/tracking",
            content=body,
            headers={
                "X-Tracking-Signature": sig,
                "X-Tracking-Timestamp": stamp,
                "X-Tracking-Delivery-Id": delivery,
            },
        )

    assert (await post("exception", "t-1")).json() == {"status": "exception"}
    assert (await post("exception", "t-1")).json() == {"status": "duplicate"}
    assert (await post("delivered", "t-2")).json() == {"status": "delivered"}
    [delay] = delays(await consume(broker.bootstrap, "shipment-delayed", 1))
    assert delay == (event.subject, "carrier_exception", "urgent")
    [delivered] = await consume(broker.bootstrap, "shipment-delivered", 1)
    assert Envelope.from_bytes(delivered.value).data["tracking_number"] == tracking
    bad = await supplier.client.post(
        "/v1/webhooks/tracking", content=b"{}", headers={"X-Tracking-Signature": "00"}
    )
    assert bad.status_code == 401
    card = (
        await supplier.client.get(f"/v1/suppliers/{alloc['supplier_id']}/scorecard", headers=ADMIN)
    ).json()
    assert card["orders"] == 1 and card["accepted"] == 1 and card["shipped"] == 1
    assert (
        card["confirmation_rate"] == 1.0
        and card["on_time_ship_rate"] == 1.0
        and card["exceptions"] == 1
    )
    assert card["median_confirm_seconds"] is not None


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_open_breaker_sends_orders_to_the_next_supplier_without_calling(supplier, broker):
    await add_supplier(supplier, "down", offers=[("MUG", "3.00", 1000, 24)])
    backup = await add_supplier(supplier, "spare", offers=[("MUG", "5.00", 1000, 24)])
    await control(supplier, "down", fail_http_rate=1.0)
    events = [placed(("MUG", 1, "12.50")) for _ in range(4)]
    await publish_envelopes(broker.bootstrap, events)
    for e in events:
        await states(supplier, e.subject, "accepted")
    assert (
        supplier.app.state.breaker.state(
            next(
                i["supplier_id"]
                for i in await allocations(supplier, events[0].subject)
                if i["supplier_id"] != backup
            )
        )
        == "open"
    )
    metrics = (await supplier.client.get("/metrics")).text
    assert "dropship_supplier_breaker_open{" in metrics and "} 1.0" in metrics
    later = placed(("MUG", 1, "12.50"))
    await publish_envelopes(broker.bootstrap, [later])
    items = await states(supplier, later.subject, "accepted")
    assert any(i["supplier_id"] == backup and i["state"] == "accepted" for i in items)
    assert await sim_orders(supplier, "down") == []


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_retry_storm_stays_under_the_suppliers_rate_limit(supplier, broker):
    await add_supplier(supplier, "limited", rate=5, offers=[("MUG", "3.00", 1000, 24)])
    await control(supplier, "limited", fail_http_rate=0.3, seed=5)  # retries on top of orders
    events = [placed(("MUG", 1, "12.50")) for _ in range(12)]
    started = time.monotonic()
    await publish_envelopes(broker.bootstrap, events)

    async def settled():
        found = [await allocations(supplier, e.subject) for e in events]
        return all(a and a[0]["state"] in ("accepted", "dispatched", "unavailable") for a in found)

    await eventually(settled, what="every order placed or given up")
    async with httpx.AsyncClient() as client:
        log = (await client.get(f"{supplier.simulator.url}/_control/limited/requests")).json()
    arrivals = sorted(
        datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp() for t in log["items"]
    )
    assert len(arrivals) > len(await sim_orders(supplier, "limited")), "some calls were retried"
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1.0) for start in arrivals)
    assert busiest <= 6, f"{busiest} calls reached the supplier within one second (limit 5/s)"
    assert time.monotonic() - started >= 2.0, "12+ calls at 5/s cannot all go out at once"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_admin_api_validates_and_csv_import_names_row_and_column(supplier):
    bad = await supplier.client.post(
        "/v1/suppliers", json={"name": "", "supplier_key": "X Y"}, headers=ADMIN
    )
    assert bad.status_code == 422
    fields = {d["field"] for d in bad.json()["error"]["details"]}
    assert {"body.name", "body.supplier_key", "body.api_base_url", "body.credentials"} <= fields
    assert (await supplier.client.get("/v1/suppliers")).status_code == 401
    sid = await add_supplier(supplier, "csvco", sla=0.5)
    async with supplier.runtime.uow() as uow:  # credentials are sealed at rest
        sealed = await uow.session.scalar(
            select(supplier_table.c.credentials).where(supplier_table.c.id == sid)
        )
    assert sealed and "sim-key-csvco" not in sealed and "sim-secret-csvco" not in sealed
    dup = await supplier.client.post(
        "/v1/suppliers",
        json={
            "name": "Again",
            "supplier_key": "csvco",
            "api_base_url": "http://x.example",
            "credentials": {"api_key": "k", "webhook_secret": "s" * 12},
        },
        headers=ADMIN,
    )
    assert dup.status_code == 409
    patched = await supplier.client.patch(
        f"/v1/suppliers/{sid}", json={"priority": 2, "ship_sla_hours": 0.25}, headers=ADMIN
    )
    assert patched.json()["priority"] == 2 and patched.json()["ship_sla_hours"] == 0.25
    assert "credentials" not in patched.json() and patched.json()["has_credentials"] is True

    header = "sku,supplier_id,supplier_sku,unit_cost,currency,stock,lead_time_hours\n"
    broken = header + (
        f"MUG,{sid},S-MUG,3.50,USD,10,24\n"
        f"TEA,{sid},S-TEA,abc,USD,10,24\n"
        f"CUP,sup_nobody,S-CUP,1.00,USD,10,24\n"
        f"BOWL,{sid},S-BOWL,1.00,USD,-4,24\n"
    )
    response = await supplier.client.post(
        "/v1/offers/import", content=broken.encode(), headers={**ADMIN, "Content-Type": "text/csv"}
    )
    assert response.status_code == 422
    problems = {(d["line"], d["column"]) for d in response.json()["error"]["details"]}
    assert problems == {(3, "unit_cost"), (4, "supplier_id"), (5, "stock")}
    offers = (await supplier.client.get(f"/v1/suppliers/{sid}/offers", headers=ADMIN)).json()[
        "items"
    ]
    assert offers == [], "nothing imported when a row is bad"

    good = header + f"MUG,{sid},S-MUG,3.50,USD,10,24\nTEA,{sid},S-TEA,1.25,USD,0,48\n"
    imported = await supplier.client.post(
        "/v1/offers/import", content=good.encode(), headers={**ADMIN, "Content-Type": "text/csv"}
    )
    assert imported.json() == {"imported": 2}
    offers = (await supplier.client.get(f"/v1/suppliers/{sid}/offers", headers=ADMIN)).json()[
        "items"
    ]
    assert [(o["sku"], o["unit_cost"], o["stock"]) for o in offers] == [
        ("MUG", "3.5", 10),
        ("TEA", "1.25", 0),
    ]
    assert (
        await supplier.client.delete(f"/v1/suppliers/{sid}/offers/TEA", headers=ADMIN)
    ).status_code == 200
    assert (
        await supplier.client.delete(f"/v1/suppliers/{sid}/offers/TEA", headers=ADMIN)
    ).status_code == 404
    wrong_header = await supplier.client.post(
        "/v1/offers/import",
        content=b"sku,cost\nA,1\n",
        headers={**ADMIN, "Content-Type": "text/csv"},
    )
    assert (
        wrong_header.status_code == 422 and wrong_header.json()["error"]["details"][0]["line"] == 1
    )


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_backorder_fails_over_or_else_delays_the_order(supplier, broker):
    await add_supplier(
        supplier, "late", offers=[("MUG", "3.00", 100, 24), ("CAP", "1.00", 100, 24)]
    )
    spare = await add_supplier(supplier, "spare2", offers=[("MUG", "5.00", 100, 24)])
    await control(supplier, "late", backorder_rate=1.0)
    movable = placed(("MUG", 1, "12.50"))
    stuck = placed(("CAP", 1, "4.00"))
    await publish_envelopes(broker.bootstrap, [movable, stuck])
    items = await states(supplier, movable.subject, "accepted")
    assert any(i["supplier_id"] == spare for i in items), "another supplier took the line"
    await states(supplier, stuck.subject, "backordered")
    [delay] = delays(await consume(broker.bootstrap, "shipment-delayed", 1))
    assert delay == (stuck.subject, "supplier_backorder", "urgent")
