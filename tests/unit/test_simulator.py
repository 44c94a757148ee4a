"""The supplier simulator over ASGI, its outbound callbacks captured by an httpx MockTransport."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from rigs.supplier_simulator.app import create_app
from rigs.supplier_simulator.engine import Simulator
from rigs.supplier_simulator.settings import SimulatorSettings
from shared.signing import sign_callback
from shared.testing import eventually

KEY = "acme"
AUTH = {"Authorization": f"Bearer sim-key-{KEY}"}
SECRET = f"sim-secret-{KEY}"
TRACKING_SECRET = "unit-tracking-secret"
CALLBACK_URL = "http://supplier.test/v1/webhooks/suppliers/sup_1"
TRACKING_URL = "http://supplier.test/v1/webhooks/tracking"
WAIT_S = 5.0


def order_body(reference: str = "so_1", *skus: str) -> dict[str, Any]:
    return {
        "reference": reference,
        "order_id": "ord_1",
        "lines": [{"supplier_sku": sku, "quantity": 1} for sku in (skus or ("SUP-MUG-1",))],
        "ship_to": {
            "name": "Ada Lovelace",
            "line1": "1 Main St",
            "city": "New York",
            "region": "NY",
            "country": "US",
            "postal_code": "10001",
        },
        "callback_url": CALLBACK_URL,
    }


def signed_by(request: httpx.Request, header: str, secret: str) -> bool:
    """Signed over `<timestamp>.<body>`, the timestamp fresh (docs/supplier-api.md)."""
    stamp = request.headers.get(header.replace("Signature", "Timestamp"), "")
    if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
        return False
    expected = sign_callback(secret, stamp, request.content)
    return hmac.compare_digest(request.headers.get(header, ""), expected)


@dataclass
class Sink:
    """Stands in for the supplier service: records every request, answers from a script."""

    requests: list[httpx.Request] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        status = self.script.pop(0) if self.script else 200
        async with self.changed:
            self.requests.append(request)
            self.changed.notify_all()
        return httpx.Response(status, json={"ok": status < 300})

    def bodies(self, url: str = CALLBACK_URL) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if str(r.url) == url]

    async def wait(self, ready: Callable[[Sink], bool]) -> None:
        async with asyncio.timeout(WAIT_S), self.changed:
            await self.changed.wait_for(lambda: ready(self))

    async def wait_types(self, *types: str) -> list[dict[str, Any]]:
        await self.wait(lambda s: [b["type"] for b in s.bodies()] == list(types))
        return self.bodies()


@dataclass
class Sim:
    app: FastAPI
    client: httpx.AsyncClient
    sink: Sink

    @property
    def engine(self) -> Simulator:
        simulator: Simulator = self.app.state.simulator
        return simulator

    async def control(self, **changes: Any) -> dict[str, Any]:
        response = await self.client.put(f"/_control/{KEY}", json=changes)
        assert response.status_code == 200, response.text
        return dict(response.json())

    async def place(
        self, idempotency_key: str = "so_1", body: dict[str, Any] | None = None
    ) -> httpx.Response:
        headers = {**AUTH, "Idempotency-Key": idempotency_key}
        return await self.client.post(f"/{KEY}/orders", json=body or order_body(), headers=headers)

    async def orders(self) -> list[dict[str, Any]]:
        response = await self.client.get(f"/_control/{KEY}/orders")
        assert response.status_code == 200
        return list(response.json()["items"])

    async def settled(self) -> list[dict[str, Any]]:
        """The orders once no lifecycle task is left running."""
        await eventually(self._idle, timeout=5, interval=0.01, what="lifecycles to end")
        return await self.orders()

    async def _idle(self) -> bool:
        return self.engine.pending_tasks == 0


def settings(**overrides: Any) -> SimulatorSettings:
    values: dict[str, Any] = {
        "seed": 7,
        "tracking_url": TRACKING_URL,
        "tracking_secret": TRACKING_SECRET,
        "decision_delay_s": 0.01,
        "callback_backoff_s": 0.0,
        "callback_max_attempts": 3,
        "log_json": False,
    }
    return SimulatorSettings(**{**values, **overrides})


@pytest.fixture
async def sim() -> AsyncIterator[Sim]:
    sink = Sink()
    app = create_app(settings(), transport=httpx.MockTransport(sink.handle))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            yield Sim(app, client, sink)


async def test_accepted_then_dispatched_callbacks_are_signed(sim: Sim) -> None:
    await sim.control(ship_after_s=0.02, deliver_after_s=None)
    response = await sim.place()
    assert response.status_code == 202
    ref = response.json()["supplier_order_ref"]
    assert response.json() == {"supplier_order_ref": ref, "status": "received"}

    accepted, dispatched = await sim.sink.wait_types("accepted", "dispatched")
    assert accepted["supplier_order_ref"] == dispatched["supplier_order_ref"] == ref
    assert accepted["reference"] == "so_1" and accepted["occurred_at"].endswith("Z")
    assert dispatched["carrier"] in {"ups", "fedex", "dhl", "usps"}
    assert dispatched["tracking_number"]
    for request in sim.sink.requests:
        assert signed_by(request, "X-Supplier-Signature", SECRET)
        assert request.headers["content-type"] == "application/json"
    ids = {r.headers["X-Supplier-Delivery-Id"] for r in sim.sink.requests}
    assert len(ids) == 2

    [order] = await sim.settled()
    assert order["state"] == "dispatched"
    assert order["tracking_number"] == dispatched["tracking_number"]
    assert [(e["type"], e["status"], e["attempts"]) for e in order["events"]] == [
        ("accepted", "sent", 1),
        ("dispatched", "sent", 1),
    ]


async def test_delivery_is_a_signed_tracking_update(sim: Sim) -> None:
    await sim.control(ship_after_s=0, deliver_after_s=0.02)
    await sim.place()
    [order] = await sim.settled()
    assert order["state"] == "delivered"
    tracking = [r for r in sim.sink.requests if str(r.url) == TRACKING_URL]
    assert [json.loads(r.content)["status"] for r in tracking] == ["in_transit", "delivered"]
    for request in tracking:
        assert signed_by(request, "X-Tracking-Signature", TRACKING_SECRET)
        assert request.headers["X-Tracking-Delivery-Id"]
        body = json.loads(request.content)
        assert body["tracking_number"] == order["tracking_number"]
        assert body["carrier"] == order["carrier"]


async def test_same_idempotency_key_returns_the_same_body_and_creates_nothing(sim: Sim) -> None:
    await sim.control(never_ship=True)
    first = await sim.place("key-1")
    again = await sim.place("key-1")
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    [order] = await sim.settled()
    assert order["idempotency_key"] == "key-1"
    assert [b["type"] for b in sim.sink.bodies()] == ["accepted"]


async def test_concurrent_duplicates_in_flight_create_one_order(sim: Sim) -> None:
    await sim.control(latency_ms=30, never_ship=True)
    responses = await asyncio.gather(*(sim.place("key-1") for _ in range(20)))
    assert {r.status_code for r in responses} == {202}
    assert len({r.json()["supplier_order_ref"] for r in responses}) == 1
    orders = await sim.settled()
    assert len(orders) == 1
    assert [b["type"] for b in sim.sink.bodies()] == ["accepted"]


async def test_same_key_with_a_different_body_is_a_conflict(sim: Sim) -> None:
    await sim.place("key-1")
    response = await sim.place("key-1", order_body("so_other"))
    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_key_reused"
    assert len(await sim.orders()) == 1


async def test_out_of_stock_sku_is_409_and_records_nothing(sim: Sim) -> None:
    await sim.control(out_of_stock_skus=["SUP-GONE", "SUP-GONE"])
    response = await sim.place(body=order_body("so_1", "SUP-MUG-1", "SUP-GONE"))
    assert response.status_code == 409
    assert response.json() == {"error": "out_of_stock", "skus": ["SUP-GONE"]}
    assert await sim.settled() == []
    assert sim.sink.requests == []


async def test_injected_http_failure_records_nothing_so_a_retry_succeeds(sim: Sim) -> None:
    await sim.control(fail_http_rate=1)
    failed = await sim.place("key-1")
    assert failed.status_code == 500
    assert failed.json()["error"] == "simulated_failure"
    assert await sim.orders() == []

    await sim.control(fail_http_rate=0, never_ship=True)
    retried = await sim.place("key-1")
    assert retried.status_code == 202
    assert len(await sim.settled()) == 1


async def test_reject_rate_one_calls_back_rejected_and_never_ships(sim: Sim) -> None:
    await sim.control(reject_rate=1, ship_after_s=0)
    assert (await sim.place()).status_code == 202
    [order] = await sim.settled()
    assert order["state"] == "rejected"
    [rejected] = sim.sink.bodies()
    assert rejected["type"] == "rejected" and rejected["reason"]


async def test_backorder_rate_one_calls_back_backordered_then_ships(sim: Sim) -> None:
    await sim.control(backorder_rate=1, ship_after_s=0, deliver_after_s=None)
    await sim.place()
    backordered, _ = await sim.sink.wait_types("backordered", "dispatched")
    assert backordered["reason"]


async def test_never_ship_accepts_but_never_dispatches(sim: Sim) -> None:
    await sim.control(never_ship=True, ship_after_s=0)
    await sim.place()
    [order] = await sim.settled()
    assert order["state"] == "accepted" and order["tracking_number"] is None
    assert [b["type"] for b in sim.sink.bodies()] == ["accepted"]


async def test_cancel_before_dispatch_stops_the_shipment(sim: Sim) -> None:
    await sim.control(ship_after_s=60)
    ref = (await sim.place()).json()["supplier_order_ref"]
    await sim.sink.wait_types("accepted")
    cancel = f"/{KEY}/orders/{ref}/cancel"
    first = await sim.client.post(cancel, headers=AUTH)
    assert (first.status_code, first.json()) == (200, {"status": "cancelled"})
    assert (await sim.client.post(cancel, headers=AUTH)).status_code == 200
    [order] = await sim.settled()  # the 60 s wait ended with the cancellation
    assert order["state"] == "cancelled"
    assert [b["type"] for b in sim.sink.bodies()] == ["accepted"]


async def test_cancel_after_dispatch_is_409_and_unknown_order_404(sim: Sim) -> None:
    await sim.control(ship_after_s=0, deliver_after_s=None)
    ref = (await sim.place()).json()["supplier_order_ref"]
    await sim.sink.wait_types("accepted", "dispatched")
    late = await sim.client.post(f"/{KEY}/orders/{ref}/cancel", headers=AUTH)
    assert late.status_code == 409
    assert late.json()["state"] == "dispatched"
    unknown = await sim.client.post(f"/{KEY}/orders/SIM-NOPE/cancel", headers=AUTH)
    assert unknown.status_code == 404


async def test_bad_credentials_are_401_and_create_nothing(sim: Sim) -> None:
    body = order_body()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
        response = await sim.client.post(
            f"/{KEY}/orders", json=body, headers={**headers, "Idempotency-Key": "k"}
        )
        assert response.status_code == 401, headers
        assert response.json()["error"] == "unauthorized"
    assert await sim.orders() == []

    await sim.control(api_key="rotated")
    assert (await sim.place()).status_code == 401
    rotated = {"Authorization": "Bearer rotated", "Idempotency-Key": "k"}
    assert (await sim.client.post(f"/{KEY}/orders", json=body, headers=rotated)).status_code == 202


async def test_malformed_order_is_422_rejected_naming_the_fields(sim: Sim) -> None:
    bad = order_body()
    bad["lines"][0]["quantity"] = 0
    response = await sim.place(body=bad)
    assert response.status_code == 422
    assert response.json()["error"] == "rejected"
    assert "body.lines.0.quantity" in response.json()["reason"]
    missing_key = await sim.client.post(f"/{KEY}/orders", json=order_body(), headers=AUTH)
    assert missing_key.status_code == 422
    assert missing_key.json()["details"][0]["field"] == "header.Idempotency-Key"
    assert await sim.orders() == []


async def test_control_validation_is_422_naming_each_field_and_changes_nothing(sim: Sim) -> None:
    before = (await sim.client.get(f"/_control/{KEY}")).json()
    response = await sim.client.put(
        f"/_control/{KEY}",
        json={"reject_rate": 1.5, "latency_ms": -1, "never_ship": None, "typo": 1},
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    fields = {d["field"] for d in error["details"]}
    assert fields == {"body.reject_rate", "body.latency_ms", "body.never_ship", "body.typo"}
    assert (await sim.client.get(f"/_control/{KEY}")).json() == before


async def test_control_defaults_partial_update_and_reset(sim: Sim) -> None:
    defaults = (await sim.client.get(f"/_control/{KEY}")).json()
    assert defaults["supplier_key"] == KEY
    assert defaults["api_key"] == f"sim-key-{KEY}" and defaults["webhook_secret"] == SECRET
    assert (defaults["ship_after_s"], defaults["deliver_after_s"]) == (1.0, 2.0)
    assert (defaults["latency_ms"], defaults["reject_rate"], defaults["never_ship"]) == (
        0,
        0,
        False,
    )

    updated = await sim.control(reject_rate=0.25, deliver_after_s=None)
    assert updated == {**defaults, "reject_rate": 0.25, "deliver_after_s": None}
    await sim.place()
    assert len(await sim.orders()) == 1

    reset = await sim.client.delete(f"/_control/{KEY}")
    assert reset.status_code == 200 and reset.json() == defaults
    assert await sim.settled() == []


async def test_seeded_runs_are_reproducible() -> None:
    async def run() -> list[tuple[str, str]]:
        app = create_app(settings(seed=42), transport=httpx.MockTransport(Sink().handle))
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
                sim = Sim(app, client, Sink())
                await sim.control(reject_rate=0.5, never_ship=True)
                for i in range(12):
                    await sim.place(f"key-{i}", order_body(f"so_{i}"))
                return [(o["supplier_order_ref"], o["state"]) for o in await sim.settled()]

    first, second = await run(), await run()
    assert first == second
    assert {state for _, state in first} == {"accepted", "rejected"}


async def test_failed_callbacks_are_retried_with_the_same_delivery_then_recorded(sim: Sim) -> None:
    await sim.control(never_ship=True)
    sim.sink.script = [503, 503]  # the supplier service is restarting
    await sim.place("key-1")
    [order] = await sim.settled()
    [event] = order["events"]
    assert (event["status"], event["attempts"], event["http_status"]) == ("sent", 3, 200)
    assert len({r.headers["X-Supplier-Delivery-Id"] for r in sim.sink.requests}) == 1
    assert len({r.content for r in sim.sink.requests}) == 1

    sim.sink.script = [503, 503, 503]
    await sim.place("key-2", order_body("so_2"))
    await sim.settled()
    sim.sink.script = [401]  # e.g. a bad signature: final, not retried
    await sim.place("key-3", order_body("so_3"))
    orders = {o["idempotency_key"]: o for o in await sim.settled()}
    exhausted, refused = orders["key-2"]["events"][0], orders["key-3"]["events"][0]
    assert (exhausted["status"], exhausted["attempts"]) == ("failed", 3)
    assert (refused["status"], refused["attempts"], refused["http_status"]) == ("failed", 1, 401)


async def test_shutdown_cancels_pending_lifecycles() -> None:
    app = create_app(settings(), transport=httpx.MockTransport(Sink().handle))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            sim = Sim(app, client, Sink())
            await sim.control(ship_after_s=3600)
            await sim.place()
            assert sim.engine.pending_tasks == 1
    assert sim.engine.pending_tasks == 0


async def test_healthz(sim: Sim) -> None:
    response = await sim.client.get("/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"


async def test_lost_callbacks_are_recorded_and_the_status_still_tells(sim: Sim) -> None:
    await sim.control(lose_callbacks=True, never_ship=True)
    ref = (await sim.place()).json()["supplier_order_ref"]
    [order] = await sim.settled()
    assert [(e["type"], e["status"]) for e in order["events"]] == [("accepted", "lost")]
    assert sim.sink.requests == [], "nothing was delivered"
    status = await sim.client.get(f"/{KEY}/orders/{ref}", headers=AUTH)
    assert status.json()["status"] == "accepted" and status.json()["reference"] == "so_1"


async def test_a_rejected_order_reports_its_reason_and_unknown_ones_are_404(sim: Sim) -> None:
    await sim.control(reject_rate=1.0)
    ref = (await sim.place()).json()["supplier_order_ref"]
    await sim.settled()
    status = (await sim.client.get(f"/{KEY}/orders/{ref}", headers=AUTH)).json()
    assert (status["status"], status["reason"]) == ("rejected", "simulated rejection")
    assert (await sim.client.get(f"/{KEY}/orders/SIM-0", headers=AUTH)).status_code == 404


async def test_delayed_callbacks_wait_and_every_request_is_logged(sim: Sim) -> None:
    await sim.control(callback_delay_s=3600, never_ship=True, fail_http_rate=1.0)
    assert (await sim.place()).status_code == 500  # a simulated failure is still a request
    await sim.control(fail_http_rate=0.0)
    assert (await sim.place()).status_code == 202

    async def decided() -> list[dict[str, Any]]:
        orders = await sim.orders()
        return orders if orders and orders[0]["state"] == "accepted" else []

    [order] = await eventually(decided, timeout=5, interval=0.01, what="the decision")
    assert order["events"] == [] and sim.sink.requests == [], "its callback has not left yet"
    log = (await sim.client.get(f"/_control/{KEY}/requests")).json()["items"]
    assert len(log) == 2
