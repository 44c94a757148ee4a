"""Return authorisation end to end: order service -> supplier service -> simulated supplier.

Real processes talking HTTP (the simulator in its own process; both services served by
uvicorn), a real broker, PostgreSQL and SQLite. The order is routed, accepted and shipped
by the simulator; its return is authorised with the supplier's RMA (or refused), and a
slow supplier leaves the return as it was until a retry gets the very same RMA.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass

import httpx
import pytest

from services.order.app import create_app as order_app
from services.order.pii import generate_key
from services.order.settings import OrderSettings
from services.supplier.app import create_app as supplier_app
from services.supplier.settings import SupplierSettings
from shared.infra import free_port
from shared.testing import eventually
from tests.support.data import API_KEY, order_body
from tests.support.kafka import consume
from tests.support.services import ServedApp, served, service_process
from tests.support.supplier import add_supplier, control

SERVICE = {"Authorization": "Bearer dev-service-token"}


@dataclass
class Stack:
    order: ServedApp
    supplier: ServedApp


def supplier_settings(settings_for, database_url: str, port: int, order_url: str):
    return settings_for(
        SupplierSettings,
        database_url,
        port=port,
        dispatcher_poll_s=0.2,
        supplier_timeout_s=1.0,
        supplier_backoff_s=0.05,
        rma_timeout_s=1.0,
        rma_max_attempts=2,
        order_url=order_url,
    )


@pytest.fixture
async def stack(database_url, settings_for, simulator, order_contacts):
    supplier_port, order_port = free_port(), free_port()
    supplier = supplier_settings(
        settings_for, await database_url("supplier"), supplier_port, order_contacts.url
    )
    order_settings = settings_for(
        OrderSettings,
        await database_url("order"),
        port=order_port,
        supplier_url=f"http://127.0.0.1:{supplier_port}",
    )
    async with served(supplier_app, supplier, supplier_port) as supplier:
        supplier.simulator = simulator  # type: ignore[attr-defined]
        async with served(order_app, order_settings, order_port) as order:
            await supplier.runtime.bus.wait_connected()
            await order.runtime.bus.wait_connected()
            yield Stack(order, supplier)


async def shipped_return(stack: Stack, key: str) -> tuple[str, dict]:
    """An order of 2 mugs shipped by supplier `key`, and a requested return of both."""
    supplier_id = await add_supplier(stack.supplier, key, offers=[("MUG-1", "4.00", 100, 24)])
    created = await stack.order.client.post("/v1/orders", json=order_body(), headers=API_KEY)
    oid = created.json()["id"]

    async def shipped():
        o = (await stack.order.client.get(f"/v1/orders/{oid}", headers=API_KEY)).json()
        return o if o["status"] == "shipped" else None

    o = await eventually(shipped, timeout=60, what="order shipped by the simulator")
    made = await stack.order.client.post(
        f"/v1/orders/{oid}/returns",
        json={"lines": [{"line_id": o["lines"][0]["line_id"], "quantity": 2}],
              "reason": "damaged_in_transit", "note": "arrived crushed"},
        headers=API_KEY,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    assert made.json()["supplier_id"] == supplier_id
    return supplier_id, made.json()


async def sim_returns(stack: Stack, key: str) -> list[dict]:
    async with httpx.AsyncClient() as client:
        url = f"{stack.supplier.simulator.url}/_control/{key}/returns"  # type: ignore[attr-defined]
        return (await client.get(url)).json()["items"]


async def test_an_rma_granted_authorises_the_return_which_is_received_and_refunded(stack, broker):
    supplier_id, ret = await shipped_return(stack, "rmaok")
    authorized = await stack.order.client.post(
        f"/v1/returns/{ret['id']}/authorize", json={}, headers=API_KEY
    )
    assert authorized.status_code == 200, authorized.text
    done = authorized.json()
    assert done["status"] == "authorized" and done["rma"].startswith("RMA-")
    assert done["return_address"] == "Returns Dept., 88 Dock Road, Shenzhen 518000, CN"
    [asked] = await sim_returns(stack, "rmaok")
    assert asked["idempotency_key"] == ret["id"] and asked["rma"] == done["rma"]
    assert asked["lines"] == [{"supplier_sku": "RMAOK-MUG-1", "quantity": 2}]
    assert asked["supplier_order_ref"] and asked["reason"] == "damaged_in_transit"
    again = await stack.order.client.post(f"/v1/returns/{ret['id']}/authorize", headers=API_KEY)
    assert again.status_code == 409 and "is authorized" in again.json()["error"]["message"]
    rma_url = f"/v1/suppliers/{supplier_id}/rma"
    rma_body = {"return_id": ret["id"], "order_id": ret["order_id"], "reason": "wrong_item",
                "lines": [{"line_id": "x", "sku": "MUG-1", "quantity": 1}]}  # fmt: skip
    forged = await stack.supplier.client.post(
        rma_url, json=rma_body, headers={"Authorization": "Bearer nope"}
    )
    assert forged.status_code == 401, "the service token is required"
    nobody = await stack.supplier.client.post(
        "/v1/suppliers/sup_nobody/rma", json=rma_body, headers=SERVICE
    )
    assert nobody.status_code == 404

    [record] = await consume(broker.bootstrap, "return-authorized", 1)
    event = json.loads(record.value)["data"]
    assert event["rma"] == done["rma"] and event["supplier_id"] == supplier_id

    received = await stack.order.client.post(f"/v1/returns/{ret['id']}/receive", headers=API_KEY)
    assert received.json()["status"] == "received"
    refund = await stack.order.client.post(
        f"/v1/orders/{ret['order_id']}/refunds",
        json={"return_id": ret["id"]},
        headers={**API_KEY, "Idempotency-Key": f"refund-{ret['id']}"},
    )
    assert refund.status_code == 201, refund.text
    r = refund.json()
    assert (r["amount"], r["cost_bearer"], r["supplier_id"]) == ("25.00", "supplier", supplier_id)
    closed = (await stack.order.client.get(f"/v1/returns/{ret['id']}", headers=API_KEY)).json()
    assert closed["status"] == "refunded" and closed["refund_id"] == r["id"]
    [issued] = await consume(broker.bootstrap, "refund-issued", 1)
    data = json.loads(issued.value)["data"]
    assert data["return_id"] == ret["id"] and data["cost_bearer"] == "supplier"
    timeline = (
        await stack.order.client.get(f"/v1/orders/{ret['order_id']}/timeline", headers=API_KEY)
    ).json()["items"]
    assert [e["type"] for e in timeline][-5:] == [
        "return-requested",
        "return-authorized",
        "return-received",
        "return-refunded",
        "refund-issued",
    ]


async def test_an_rma_refused_rejects_the_return_with_the_suppliers_reason(stack, broker):
    await control(stack.supplier, "rmano", rma_refuse=True, rma_refuse_reason="used goods")
    _, ret = await shipped_return(stack, "rmano")
    answered = await stack.order.client.post(f"/v1/returns/{ret['id']}/authorize", headers=API_KEY)
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "rejected" and answered.json()["rma"] is None
    assert "used goods" in answered.json()["note"]
    [record] = await consume(broker.bootstrap, "return-rejected", 1)
    assert "used goods" in json.loads(record.value)["data"]["note"]


async def test_a_slow_supplier_changes_nothing_and_a_retry_gets_the_same_rma(stack, broker):
    await control(stack.supplier, "rmaslow", rma_latency_ms=2500)
    _, ret = await shipped_return(stack, "rmaslow")
    slow = await stack.order.client.post(f"/v1/returns/{ret['id']}/authorize", headers=API_KEY)
    assert slow.status_code == 503, slow.text
    assert slow.headers["Retry-After"] and slow.json()["error"]["code"] == "supplier_unavailable"
    still = (await stack.order.client.get(f"/v1/returns/{ret['id']}", headers=API_KEY)).json()
    assert still == ret, "the return stays requested, nothing changed"
    [granted_meanwhile] = await sim_returns(stack, "rmaslow")  # the supplier did grant one

    await control(stack.supplier, "rmaslow", rma_latency_ms=0)
    retried = await stack.order.client.post(f"/v1/returns/{ret['id']}/authorize", headers=API_KEY)
    assert retried.status_code == 200, retried.text
    assert retried.json()["rma"] == granted_meanwhile["rma"], "no second RMA"
    [once] = await sim_returns(stack, "rmaslow")
    assert once["rma"] == granted_meanwhile["rma"] and once["requests"] >= 2


async def test_a_crash_after_the_supplier_granted_never_asks_for_a_second_rma(
    database_url, settings_for, simulator, order_contacts, broker, tmp_path
):
    """The order service dies right after the supplier granted the RMA, before recording
    it; restarted, the same authorize gets the same RMA and the supplier made only one."""
    supplier_port = free_port()
    settings = supplier_settings(
        settings_for, await database_url("supplier"), supplier_port, order_contacts.url
    )
    env = {
        "DROPSHIP_ENVIRONMENT": "test",
        "DROPSHIP_ORDER_DATABASE_URL": await database_url("order"),
        "DROPSHIP_KAFKA_BOOTSTRAP": broker.bootstrap,
        "DROPSHIP_DATA_DIR": str(tmp_path),
        "DROPSHIP_LOG_JSON": "false",
        "DROPSHIP_PII_KEY": generate_key(),
        "DROPSHIP_SUPPLIER_URL": f"http://127.0.0.1:{supplier_port}",
        "DROPSHIP_OUTBOX_POLL_INTERVAL_S": "0.5",
    }
    process = service_process("order", env, tmp_path)
    async with served(supplier_app, settings, supplier_port) as supplier:
        supplier.simulator = simulator  # type: ignore[attr-defined]
        await supplier.runtime.bus.wait_connected()
        process.start(extra_env={"DROPSHIP_FAULT_POINTS": "order.rma-answered"})
        try:
            async with httpx.AsyncClient(base_url=process.url, timeout=30) as client:
                order = ServedApp(None, process.url, client, None)  # type: ignore[arg-type]
                _, ret = await shipped_return(Stack(order, supplier), "rmacrash")
                with contextlib.suppress(httpx.HTTPError):
                    await client.post(f"/v1/returns/{ret['id']}/authorize", headers=API_KEY)
                assert process.wait_exit(30) == 137, process.log_tail()
                [granted] = await sim_returns(Stack(order, supplier), "rmacrash")

                process.start()  # without the failpoint
                unchanged = await client.get(f"/v1/returns/{ret['id']}", headers=API_KEY)
                assert unchanged.json()["status"] == "requested", "nothing was recorded"
                again = await client.post(f"/v1/returns/{ret['id']}/authorize", headers=API_KEY)
                assert again.status_code == 200, again.text
                assert again.json()["rma"] == granted["rma"]
                [once] = await sim_returns(Stack(order, supplier), "rmacrash")
                assert once["rma"] == granted["rma"] and once["requests"] == 2
        finally:
            process.stop()
