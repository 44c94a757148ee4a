"""Return authorisations without I/O: the simulator's returns API, both HTTP clients, errors.

The simulator runs over ASGI; the supplier adapter and the order service's client speak to
`httpx.MockTransport` handlers (the transport is the seam).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from rigs.supplier_simulator.app import create_app as simulator_app
from rigs.supplier_simulator.settings import SimulatorSettings
from services.order.aftersales import errors
from services.order.aftersales.api import AFTERSALES_ERRORS
from services.order.aftersales.domain import ReturnedLine
from services.order.aftersales.errors import InvalidAfterSales, RmaUnavailable
from services.order.aftersales.rma import RmaAsk, RmaGranted, RmaRefused, SupplierRmaClient
from services.supplier.adapter import (
    OrderLine,
    Rejected,
    ReturnRequest,
    SupplierClient,
    SupplierEndpoint,
    Unavailable,
)
from services.supplier.adapter import (
    RmaGranted as SupplierGranted,
)
from services.supplier.breaker import CircuitBreaker
from shared.events import ReturnReason

pytestmark = pytest.mark.unit
AUTH = {"Authorization": "Bearer sim-key-acme"}
BODY = {
    "reference": "ret_1",
    "order_id": "ord_1",
    "supplier_order_ref": "SIM-1",
    "reason": "damaged_in_transit",
    "lines": [{"supplier_sku": "SUP-MUG-1", "quantity": 2}],
}


@pytest.fixture
async def sim() -> AsyncIterator[httpx.AsyncClient]:
    settings = SimulatorSettings(seed=7, tracking_url="http://t.test/", log_json=False)
    app = simulator_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
            yield client


async def ask(sim: httpx.AsyncClient, key: str = "ret_1", body: Any = None) -> httpx.Response:
    headers = {**AUTH, "Idempotency-Key": key}
    return await sim.post("/acme/returns", json=body or BODY, headers=headers)


async def test_the_simulator_grants_once_per_key_whatever_it_says_later(sim) -> None:
    first = await ask(sim)
    assert first.status_code == 201
    granted = first.json()
    assert granted["status"] == "granted" and granted["rma"].startswith("RMA-")
    assert granted["return_address"]
    await sim.put("/_control/acme", json={"rma_refuse": True})
    again = await ask(sim)
    assert again.json() == granted, "the same key answers the first decision"
    refused = await ask(sim, "ret_2", {**BODY, "reference": "ret_2"})
    assert refused.status_code == 422
    assert refused.json() == {"error": "refused", "reason": "outside the 30-day return window"}
    reused = await ask(sim, "ret_1", {**BODY, "reason": "changed_mind"})
    assert reused.status_code == 409 and reused.json()["error"] == "idempotency_key_reused"
    listed = (await sim.get("/_control/acme/returns")).json()["items"]
    assert [(r["idempotency_key"], r["status"], r["requests"]) for r in listed] == [
        ("ret_1", "granted", 2),
        ("ret_2", "refused", 1),
    ]
    bad = await sim.put("/_control/acme", json={"rma_latency_ms": None})
    assert bad.status_code == 422


async def test_a_slow_simulator_keeps_the_rma_it_grants(sim) -> None:
    await sim.put("/_control/acme", json={"rma_latency_ms": 300})
    with pytest.raises(TimeoutError):  # the caller gives up (and its request is dropped)
        async with asyncio.timeout(0.05):
            await ask(sim)
    [kept] = (await sim.get("/_control/acme/returns")).json()["items"]
    await sim.put("/_control/acme", json={"rma_latency_ms": 0})
    assert (await ask(sim)).json()["rma"] == kept["rma"]


ENDPOINT = SupplierEndpoint("sup_acme", "http://sim.test/acme", "sim-key-acme")
RETURN = ReturnRequest("ret_1", "ord_1", "SIM-1", "damaged_in_transit", [OrderLine("S-1", 2)])


async def supplier_outcome(*answers: httpx.Response) -> tuple[Any, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    script = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return script.pop(0)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handle)) as http:
        breaker = CircuitBreaker(failure_rate=0.5, cooldown_s=30)
        client = SupplierClient(http, breaker, max_attempts=3, backoff_initial_s=0)
        return await client.request_return(ENDPOINT, RETURN), seen


async def test_the_adapter_retries_with_the_return_id_as_idempotency_key() -> None:
    granted = httpx.Response(201, json={"rma": "RMA-1", "return_address": "Dock 1"})
    outcome, seen = await supplier_outcome(httpx.Response(503), granted)
    assert outcome == SupplierGranted("RMA-1", "Dock 1", attempts=2)
    assert [r.headers["Idempotency-Key"] for r in seen] == ["ret_1", "ret_1"]
    assert json.loads(seen[0].content) == {
        **BODY,
        "lines": [{"supplier_sku": "S-1", "quantity": 2}],
    }
    refused, _ = await supplier_outcome(
        httpx.Response(422, json={"error": "refused", "reason": "used"})
    )
    assert refused == Rejected("used")
    down, _ = await supplier_outcome(*(httpx.Response(500) for _ in range(3)))
    assert isinstance(down, Unavailable) and down.attempts == 3


ASK = RmaAsk("ret_1", "ord_1", "sup_a", ReturnReason.WRONG_ITEM, (ReturnedLine("l1", "S", 1),))


async def desk_answer(*answers: httpx.Response | Exception) -> Any:
    script = list(answers)

    def handle(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer tok"
        assert request.url.path == "/v1/suppliers/sup_a/rma"
        answer = script.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = SupplierRmaClient(
        "http://supplier.test", "tok", retry_for_s=1.0, transport=httpx.MockTransport(handle)
    )
    return await client.ask(ASK)


async def test_the_order_services_client_reads_granted_refused_and_unavailable() -> None:
    granted = httpx.Response(200, json={"status": "granted", "rma": "R1", "return_address": "A"})
    assert await desk_answer(httpx.ConnectError("down"), granted) == RmaGranted("R1", "A")
    refused = httpx.Response(200, json={"status": "refused", "reason": "too late"})
    assert await desk_answer(refused) == RmaRefused("too late")
    busy = httpx.Response(503, json={"error": {"code": "supplier_unavailable", "message": "slow"}})
    with pytest.raises(RmaUnavailable, match="slow"):
        await desk_answer(busy)
    with pytest.raises(InvalidAfterSales, match="not a supplier the supplier service knows"):
        await desk_answer(httpx.Response(404, json={"error": {"code": "not_found"}}))
    with pytest.raises(RmaUnavailable, match="in time"):
        await desk_answer(httpx.ReadTimeout("late"))
    with pytest.raises(RmaUnavailable, match="unreachable"):
        await asyncio.wait_for(desk_answer(*(httpx.ConnectError("x") for _ in range(100))), 10)


def _subclasses(cls: type[Exception]) -> list[type[Exception]]:
    found: list[type[Exception]] = []
    for sub in cls.__subclasses__():
        found += [sub, *_subclasses(sub)]
    return found


@pytest.mark.parametrize("cls", _subclasses(errors.AfterSalesError), ids=lambda c: c.__name__)
def test_every_after_sales_error_has_a_status(cls: type[Exception]) -> None:
    assert any(base in AFTERSALES_ERRORS for base in cls.__mro__)
