"""The supplier simulator keeps its state under the data folder: a restart forgets nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.infra import free_port
from shared.testing import eventually
from tests.integration.test_simulator import Sink, running_sink
from tests.support.services import SIMULATOR_APP, ServiceProcess

KEY = "keeper"
HEADERS = {"Authorization": f"Bearer sim-key-{KEY}", "Idempotency-Key": "so_keep"}


def _body(sink: Sink) -> dict[str, Any]:
    return {
        "reference": "so_keep",
        "order_id": "ord_keep",
        "lines": [{"supplier_sku": "SUP-MUG-1", "quantity": 1}],
        "ship_to": {
            "name": "Ada Lovelace",
            "line1": "1 Main St",
            "city": "New York",
            "region": "NY",
            "country": "US",
            "postal_code": "10001",
        },
        "callback_url": f"{sink.url}/v1/webhooks/suppliers/sup_keep",
    }


@pytest.mark.parametrize("stop", ["terminate", "kill"])
async def test_a_restarted_simulator_knows_its_orders_and_ships_them(
    tmp_path: Path, stop: str
) -> None:
    async with running_sink() as sink:
        port = free_port()
        env = {
            "DROPSHIP_SIMULATOR_PORT": str(port),
            "DROPSHIP_SIMULATOR_TRACKING_URL": f"{sink.url}/v1/webhooks/tracking",
            "DROPSHIP_TRACKING_SECRET": "it-tracking-secret",
            "DROPSHIP_SIMULATOR_CALLBACK_BACKOFF_S": "0.05",
            "DROPSHIP_SIMULATOR_LOG_JSON": "false",
            "DROPSHIP_DATA_DIR": str(tmp_path / "var"),
        }
        sim = ServiceProcess("simulator", env, port, tmp_path / "sim.log", app=SIMULATOR_APP)
        sim.start()
        try:
            async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
                control = {"ship_after_s": 3, "deliver_after_s": 0.2, "latency_ms": 5}
                assert (await client.put(f"/_control/{KEY}", json=control)).status_code == 200
                placed = await client.post(f"/{KEY}/orders", json=_body(sink), headers=HEADERS)
                assert placed.status_code == 202, placed.text
                ref = placed.json()["supplier_order_ref"]

                def callbacks() -> list[str]:
                    return [r.json["type"] for r in sink.received if "suppliers" in r.path]

                async def accepted() -> bool:
                    return "accepted" in callbacks()

                await eventually(accepted, timeout=10, what="the accepted callback")
            sim.kill() if stop == "kill" else sim.stop()

            sim.start()  # same data folder
            async with httpx.AsyncClient(base_url=sim.url, timeout=10) as client:
                status = await client.get(f"/{KEY}/orders/{ref}", headers=HEADERS)
                assert status.status_code == 200, status.text
                # accepted before the stop; it ships 3 s after that, whatever the restart took
                assert status.json()["status"] in ("accepted", "dispatched", "delivered")
                kept = (await client.get(f"/_control/{KEY}")).json()
                assert (kept["ship_after_s"], kept["latency_ms"]) == (3, 5)
                again = await client.post(f"/{KEY}/orders", json=_body(sink), headers=HEADERS)
                assert again.json()["supplier_order_ref"] == ref, "the idempotency key is kept"

                async def delivered() -> dict[str, Any] | None:
                    got = (await client.get(f"/_control/{KEY}/stats")).json()
                    return dict(got) if "tracking:delivered" in got["deliveries"] else None

                stats = await eventually(delivered, timeout=20, what="delivery after a restart")
                final = (await client.get(f"/{KEY}/orders/{ref}", headers=HEADERS)).json()
        finally:
            sim.stop()
    assert final["status"] == "delivered" and final["tracking_number"]
    assert callbacks().count("dispatched") >= 1
    assert set(callbacks()) == {"accepted", "dispatched"}
    assert stats["orders"] == 1 and stats["states"] == {"delivered": 1}
    assert stats["given_up"] == 0
    assert {"callback:accepted", "callback:dispatched", "tracking:delivered"} <= set(
        stats["deliveries"]
    )
