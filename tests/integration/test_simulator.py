"""The supplier simulator as a real uvicorn process calling back a real HTTP sink."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from shared.infra import free_port
from shared.signing import sign_callback
from shared.testing import eventually
from tests.support.services import SIMULATOR_APP, ServiceProcess

KEY = "acme"
SECRET = f"sim-secret-{KEY}"
TRACKING_SECRET = "it-tracking-secret"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))

    def signed(self, header: str, secret: str) -> bool:
        """Signed over `<timestamp>.<body>`, the timestamp fresh (docs/supplier-api.md)."""
        stamp = self.headers.get(header.lower().replace("signature", "timestamp"), "")
        if not stamp.isdigit() or abs(time.time() - int(stamp)) > 300:
            return False
        expected = sign_callback(secret, stamp, self.body)
        return hmac.compare_digest(self.headers.get(header.lower(), ""), expected)


@dataclass
class Sink:
    """A stand-in supplier service on a real port; answers 503 to each delivery's first try."""

    port: int
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def app(self) -> FastAPI:
        app = FastAPI()
        seen: set[str] = set()

        @app.post("/v1/webhooks/{rest:path}")
        async def webhook(request: Request, rest: str) -> Response:
            headers = {k.lower(): v for k, v in request.headers.items()}
            self.received.append(Received(request.url.path, headers, await request.body()))
            ids = (headers.get("x-supplier-delivery-id"), headers.get("x-tracking-delivery-id"))
            delivery = next(i for i in (*ids, "") if i is not None)
            if delivery not in seen:  # as if the supplier service were restarting
                seen.add(delivery)
                return Response(status_code=503)
            return Response(status_code=200)

        return app


@contextlib.asynccontextmanager
async def running_sink() -> AsyncIterator[Sink]:
    sink = Sink(free_port())
    config = uvicorn.Config(
        sink.app(), host="127.0.0.1", port=sink.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()  # surface a failed start
        return server.started

    try:
        await eventually(started, timeout=10, interval=0.02, what="callback sink to listen")
        yield sink
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    async with running_sink() as s:
        yield s


@pytest.fixture
async def simulator(sink: Sink, tmp_path: Path) -> AsyncIterator[ServiceProcess]:
    port = free_port()
    env = {
        "DROPSHIP_SIMULATOR_PORT": str(port),
        "DROPSHIP_SIMULATOR_SEED": "11",
        "DROPSHIP_SIMULATOR_TRACKING_URL": f"{sink.url}/v1/webhooks/tracking",
        "DROPSHIP_TRACKING_SECRET": TRACKING_SECRET,
        "DROPSHIP_SIMULATOR_CALLBACK_BACKOFF_S": "0.05",
        "DROPSHIP_SIMULATOR_LOG_JSON": "false",
    }
    process = ServiceProcess("simulator", env, port, tmp_path / "simulator.log", app=SIMULATOR_APP)
    process.start(wait=False)

    async def healthy() -> bool:
        assert process.process is not None
        if process.process.poll() is not None:
            raise AssertionError(f"simulator exited: {process.log_tail()}")
        async with httpx.AsyncClient(timeout=1) as client:
            with contextlib.suppress(httpx.HTTPError):
                return (await client.get(f"{process.url}/healthz")).status_code == 200
        return False

    try:
        await eventually(healthy, timeout=30, interval=0.05, what="simulator /healthz")
        yield process
    finally:
        process.stop()  # SIGTERM: uvicorn shuts down gracefully, then re-raises the signal
        log = process.log_tail(500)
        assert "Application shutdown complete." in log, log
        assert "Traceback" not in log, log


async def test_accepted_dispatched_delivered_over_real_http(
    simulator: ServiceProcess, sink: Sink
) -> None:
    callback_url = f"{sink.url}/v1/webhooks/suppliers/sup_1"
    async with httpx.AsyncClient(base_url=simulator.url, timeout=10) as client:
        control = await client.put(
            f"/_control/{KEY}", json={"ship_after_s": 0.1, "deliver_after_s": 0.1}
        )
        assert control.status_code == 200, control.text

        body = {
            "reference": "so_1",
            "order_id": "ord_1",
            "lines": [{"supplier_sku": "SUP-MUG-1", "quantity": 2}],
            "ship_to": {
                "name": "Ada Lovelace",
                "line1": "1 Main St",
                "city": "New York",
                "region": "NY",
                "country": "US",
                "postal_code": "10001",
            },
            "callback_url": callback_url,
        }
        headers = {"Authorization": f"Bearer sim-key-{KEY}", "Idempotency-Key": "so_1"}
        first, again = await asyncio.gather(
            client.post(f"/{KEY}/orders", json=body, headers=headers),
            client.post(f"/{KEY}/orders", json=body, headers=headers),
        )
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json()
        ref = first.json()["supplier_order_ref"]

        async def delivered() -> list[dict[str, Any]]:
            items = (await client.get(f"/_control/{KEY}/orders")).json()["items"]
            done = items and items[0]["state"] == "delivered" and len(items[0]["events"]) == 4
            return list(items) if done else []

        [order] = await eventually(delivered, timeout=20, interval=0.05, what="delivery")
        # the order's status, for a caller that missed its callbacks
        status = await client.get(f"/{KEY}/orders/{ref}", headers=headers)
        assert status.status_code == 200, status.text
        assert status.json() == {
            "supplier_order_ref": ref,
            "reference": "so_1",
            "status": "delivered",
            "reason": None,
            "carrier": order["carrier"],
            "tracking_number": order["tracking_number"],
        }
        assert (await client.get(f"/{KEY}/orders/SIM-NOPE", headers=headers)).status_code == 404
        assert (await client.get(f"/{KEY}/orders/{ref}")).status_code == 401
        log = (await client.get(f"/_control/{KEY}/requests")).json()["items"]
        assert len(log) == 4, "two placements, two status requests (the refused one not counted)"

    assert order["supplier_order_ref"] == ref and order["idempotency_key"] == "so_1"
    assert [(e["kind"], e["type"], e["status"], e["attempts"]) for e in order["events"]] == [
        ("callback", "accepted", "sent", 2),
        ("callback", "dispatched", "sent", 2),
        ("tracking", "in_transit", "sent", 2),
        ("tracking", "delivered", "sent", 2),
    ]

    callbacks = [r for r in sink.received if r.path == "/v1/webhooks/suppliers/sup_1"]
    tracking = [r for r in sink.received if r.path == "/v1/webhooks/tracking"]
    assert [r.json["type"] for r in callbacks] == ["accepted"] * 2 + ["dispatched"] * 2
    assert [r.json["status"] for r in tracking] == ["in_transit"] * 2 + ["delivered"] * 2
    assert all(r.signed("X-Supplier-Signature", SECRET) for r in callbacks)
    assert all(r.signed("X-Tracking-Signature", TRACKING_SECRET) for r in tracking)
    # a retry repeats the same delivery, byte for byte, under the same delivery id
    for first_try, retry in zip(sink.received[::2], sink.received[1::2], strict=True):
        assert first_try.body == retry.body
        assert first_try.headers.get("x-supplier-delivery-id") == retry.headers.get(
            "x-supplier-delivery-id"
        )
        assert first_try.headers.get("x-tracking-delivery-id") == retry.headers.get(
            "x-tracking-delivery-id"
        )
    dispatched = callbacks[-1].json
    assert dispatched["supplier_order_ref"] == ref and dispatched["reference"] == "so_1"
    assert tracking[-1].json["tracking_number"] == dispatched["tracking_number"]
    assert tracking[-1].json["carrier"] == dispatched["carrier"] == order["carrier"]


async def test_shutdown_with_callbacks_pending_is_graceful(
    simulator: ServiceProcess, sink: Sink
) -> None:
    async with httpx.AsyncClient(base_url=simulator.url, timeout=10) as client:
        await client.put(f"/_control/{KEY}", json={"ship_after_s": 3600})
        body = {
            "reference": "so_2",
            "order_id": "ord_2",
            "lines": [{"supplier_sku": "SUP-MUG-1", "quantity": 1}],
            "ship_to": {
                "name": "Max Muster",
                "line1": "Hauptstr. 1",
                "city": "Berlin",
                "country": "DE",
                "postal_code": "10115",
            },
            "callback_url": f"{sink.url}/v1/webhooks/suppliers/sup_1",
        }
        headers = {"Authorization": f"Bearer sim-key-{KEY}", "Idempotency-Key": "so_2"}
        assert (await client.post(f"/{KEY}/orders", json=body, headers=headers)).status_code == 202

        async def accepted() -> bool:
            [order] = (await client.get(f"/_control/{KEY}/orders")).json()["items"]
            return order["state"] == "accepted" and len(order["events"]) == 1

        await eventually(accepted, timeout=20, interval=0.05, what="accepted callback")
        assert (await client.get("/healthz")).json()["pending_tasks"] == 1
    # the fixture's teardown stops the process and checks the shutdown was clean
