"""Supplier HTTP adapter through httpx.MockTransport: outcomes, retries, breaker, rate limit."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from services.supplier.adapter import (
    OrderLine,
    OutOfStock,
    PlaceOrderRequest,
    Received,
    Rejected,
    SupplierClient,
    SupplierEndpoint,
    SupplierStatus,
    Unavailable,
)
from services.supplier.breaker import BreakerState, CircuitBreaker

Handler = Callable[[httpx.Request], httpx.Response]
ENDPOINT = SupplierEndpoint("sup_acme", "http://sim.test/acme/", "sim-key-acme", None)


def order(key: str = "so_1", postal_code: str = "10001") -> PlaceOrderRequest:
    return PlaceOrderRequest(
        idempotency_key=key,
        reference=key,
        order_id="ord_1",
        lines=[OrderLine("SUP-MUG-1", 2), OrderLine("SUP-TEE-3", 1)],
        ship_country="US",
        ship_postal_code=postal_code,
        callback_url="http://127.0.0.1:8002/v1/webhooks/suppliers/sup_acme",
    )


def received(ref: str = "SIM-1") -> httpx.Response:
    return httpx.Response(202, json={"supplier_order_ref": ref, "status": "received"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """Transport handler that replays scripted answers and keeps every request."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
async def make_client(waits: list[float]) -> AsyncIterator[Callable[..., SupplierClient]]:
    opened: list[httpx.AsyncClient] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    def make(
        handler: Handler, breaker: CircuitBreaker | None = None, **settings: Any
    ) -> SupplierClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        opened.append(http)
        settings = {"backoff_initial_s": 0.001, "backoff_max_s": 0.01, **settings}
        return SupplierClient(http, breaker or CircuitBreaker(), sleep=fake_sleep, **settings)

    yield make
    for http in opened:
        await http.aclose()


async def test_5xx_is_retried_with_the_same_idempotency_key(make_client: Any) -> None:
    transport = Recorder(httpx.Response(500), received("SIM-42"))
    outcome = await make_client(transport).place_order(ENDPOINT, order("so_7"))
    assert outcome == Received("SIM-42", attempts=2)
    assert [r.headers["Idempotency-Key"] for r in transport.requests] == ["so_7", "so_7"]
    first = transport.requests[0]
    assert first.method == "POST"
    assert str(first.url) == "http://sim.test/acme/orders"
    assert first.headers["Authorization"] == "Bearer sim-key-acme"
    assert first.headers["Content-Type"] == "application/json"
    assert json.loads(first.content) == {
        "reference": "so_7",
        "order_id": "ord_1",
        "lines": [
            {"supplier_sku": "SUP-MUG-1", "quantity": 2},
            {"supplier_sku": "SUP-TEE-3", "quantity": 1},
        ],
        "ship_to": {"country": "US", "postal_code": "10001"},
        "callback_url": "http://127.0.0.1:8002/v1/webhooks/suppliers/sup_acme",
    }


async def test_out_of_stock_is_not_retried(make_client: Any) -> None:
    transport = Recorder(httpx.Response(409, json={"error": "out_of_stock", "skus": ["SUP-MUG-1"]}))
    outcome = await make_client(transport).place_order(ENDPOINT, order())
    assert outcome == OutOfStock(["SUP-MUG-1"], attempts=1)
    assert len(transport.requests) == 1


async def test_rejection_is_not_retried(make_client: Any) -> None:
    transport = Recorder(httpx.Response(422, json={"error": "rejected", "reason": "no PO boxes"}))
    outcome = await make_client(transport).place_order(ENDPOINT, order())
    assert outcome == Rejected("no PO boxes", attempts=1)
    assert len(transport.requests) == 1


async def test_bad_credentials_are_unavailable_and_not_retried(make_client: Any) -> None:
    transport = Recorder(httpx.Response(401))
    outcome = await make_client(transport).place_order(ENDPOINT, order())
    assert isinstance(outcome, Unavailable)
    assert outcome.reason.startswith("bad credentials")
    assert outcome.attempts == 1
    assert len(transport.requests) == 1


async def test_other_4xx_is_not_retried(make_client: Any) -> None:
    transport = Recorder(httpx.Response(404))
    outcome = await make_client(transport).place_order(ENDPOINT, order())
    assert outcome == Unavailable("http 404", attempts=1)


async def test_timeouts_exhaust_the_attempts(make_client: Any, waits: list[float]) -> None:
    transport = Recorder(httpx.ReadTimeout("slow supplier"))
    outcome = await make_client(transport, max_attempts=4).place_order(ENDPOINT, order())
    assert isinstance(outcome, Unavailable)
    assert outcome.reason.startswith("timeout")
    assert outcome.attempts == 4
    assert len(transport.requests) == 4
    assert len(waits) == 3
    assert all(0 < w <= 0.01 for w in waits)  # jittered, capped by backoff_max_s


async def test_connection_errors_are_retried(make_client: Any) -> None:
    transport = Recorder(httpx.ConnectError("refused"), received())
    outcome = await make_client(transport).place_order(ENDPOINT, order())
    assert outcome == Received("SIM-1", attempts=2)


async def test_persistent_503_ends_unavailable(make_client: Any) -> None:
    transport = Recorder(httpx.Response(503))
    outcome = await make_client(transport, max_attempts=3).place_order(ENDPOINT, order())
    assert outcome == Unavailable("http 503", attempts=3)


async def test_429_retry_after_is_honoured(make_client: Any, waits: list[float]) -> None:
    transport = Recorder(httpx.Response(429, headers={"Retry-After": "2"}), received())
    client = make_client(transport, backoff_max_s=5.0)
    outcome = await client.place_order(ENDPOINT, order())
    assert outcome == Received("SIM-1", attempts=2)
    assert waits == [2.0]


async def test_retry_after_beyond_the_cap_fails_over_at_once(
    make_client: Any, waits: list[float]
) -> None:
    transport = Recorder(httpx.Response(429, headers={"Retry-After": "120"}), received())
    outcome = await make_client(transport, backoff_max_s=3.0).place_order(ENDPOINT, order())
    assert outcome == Unavailable("http 429", attempts=1)
    assert waits == []


async def test_breaker_opens_short_circuits_and_recovers(make_client: Any) -> None:
    clock = FakeClock()
    changes: list[BreakerState] = []
    breaker = CircuitBreaker(
        window=4,
        min_calls=4,
        failure_rate=0.5,
        cooldown_s=30,
        clock=clock,
        on_change=lambda key, old, new: changes.append(new),
    )
    transport = Recorder(httpx.Response(503))
    client = make_client(transport, breaker, max_attempts=2)

    for _ in range(2):
        assert await client.place_order(ENDPOINT, order()) == Unavailable("http 503", attempts=2)
    assert breaker.state("sup_acme") is BreakerState.OPEN

    outcome = await client.place_order(ENDPOINT, order())
    assert outcome == Unavailable("breaker open", attempts=0)
    assert len(transport.requests) == 4  # no request went out

    clock.now += 30
    transport.answers = [received("SIM-9")]
    assert await client.place_order(ENDPOINT, order()) == Received("SIM-9", attempts=1)
    assert breaker.state("sup_acme") is BreakerState.CLOSED
    assert changes == [BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED]


async def test_breaker_opening_mid_retry_stops_the_retries(make_client: Any) -> None:
    breaker = CircuitBreaker(window=2, min_calls=2, failure_rate=1.0, clock=FakeClock())
    transport = Recorder(httpx.Response(500))
    outcome = await make_client(transport, breaker, max_attempts=4).place_order(ENDPOINT, order())
    assert outcome == Unavailable("breaker open", attempts=2)
    assert len(transport.requests) == 2


async def test_client_answers_do_not_trip_the_breaker(make_client: Any) -> None:
    breaker = CircuitBreaker(window=4, min_calls=4)
    transport = Recorder(httpx.Response(409, json={"error": "out_of_stock", "skus": ["X"]}))
    client = make_client(transport, breaker)
    for _ in range(6):
        await client.place_order(ENDPOINT, order())
    assert breaker.state("sup_acme") is BreakerState.CLOSED


async def test_rate_limit_holds_across_retries(make_client: Any) -> None:
    """30 orders, each failing once: 60 requests at 50/s never put 51 in one second."""
    stamps: list[float] = []
    seen: set[str] = set()

    def handler(request: httpx.Request) -> httpx.Response:
        stamps.append(time.monotonic())
        key = request.headers["Idempotency-Key"]
        if key not in seen:
            seen.add(key)
            return httpx.Response(503)
        return received(f"SIM-{key}")

    breaker = CircuitBreaker(window=100, min_calls=100)  # this test is about the limiter
    client = make_client(handler, breaker)
    endpoint = SupplierEndpoint("sup_fast", "http://sim.test/fast", "k", rate_per_s=50)
    outcomes = await asyncio.gather(
        *(client.place_order(endpoint, order(f"so_{i}")) for i in range(30))
    )
    assert all(isinstance(o, Received) and o.attempts == 2 for o in outcomes)
    assert len(stamps) == 60
    busiest = max(sum(1 for t in stamps if start <= t < start + 1.0) for start in stamps)
    assert busiest <= 50
    assert stamps[-1] - stamps[0] >= 59 / 50 * 0.99


async def test_unlimited_supplier_is_not_throttled(make_client: Any) -> None:
    client = make_client(Recorder(received()))
    started = time.monotonic()
    await asyncio.gather(*(client.place_order(ENDPOINT, order(f"so_{i}")) for i in range(100)))
    assert time.monotonic() - started < 0.5


async def test_cancel_order(make_client: Any) -> None:
    transport = Recorder(httpx.Response(200, json={"status": "cancelled"}))
    assert await make_client(transport).cancel_order(ENDPOINT, "SIM-1") is True
    request = transport.requests[0]
    assert str(request.url) == "http://sim.test/acme/orders/SIM-1/cancel"
    assert request.headers["Authorization"] == "Bearer sim-key-acme"
    assert request.headers["Idempotency-Key"]


async def test_cancel_after_dispatch_is_refused(make_client: Any) -> None:
    transport = Recorder(httpx.Response(409, json={"error": "dispatched"}))
    assert await make_client(transport).cancel_order(ENDPOINT, "SIM-1") is False
    assert len(transport.requests) == 1


async def test_cancel_is_retried_on_5xx(make_client: Any) -> None:
    transport = Recorder(httpx.Response(502), httpx.Response(200, json={"status": "cancelled"}))
    assert await make_client(transport).cancel_order(ENDPOINT, "SIM-1") is True
    assert len(transport.requests) == 2


async def test_logs_name_the_supplier_but_never_the_body(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    transport = Recorder(httpx.Response(500), received())
    await make_client(transport).place_order(ENDPOINT, order(postal_code="ZZ-SECRET-9"))
    ours = [r for r in caplog.records if r.name == "services.supplier.adapter"]
    assert ours
    assert all(getattr(r, "supplier_id", None) == "sup_acme" for r in ours)
    assert "ZZ-SECRET-9" not in caplog.text
    assert all("ZZ-SECRET-9" not in repr(r.__dict__) for r in caplog.records)


async def test_order_status_is_fetched_with_get_and_retried_on_5xx(make_client: Any) -> None:
    answer = {
        "supplier_order_ref": "SIM-9",
        "status": "dispatched",
        "carrier": "ups",
        "tracking_number": "1Z9",
        "reason": None,
    }
    transport = Recorder(httpx.Response(503), httpx.Response(200, json=answer))
    outcome = await make_client(transport).order_status(ENDPOINT, "SIM-9")
    assert outcome == SupplierStatus("SIM-9", "dispatched", None, "ups", "1Z9", attempts=2)
    assert [(r.method, str(r.url)) for r in transport.requests] == [
        ("GET", "http://sim.test/acme/orders/SIM-9")
    ] * 2
    assert transport.requests[0].headers["Authorization"] == "Bearer sim-key-acme"


async def test_an_unusable_status_answer_is_unavailable(make_client: Any) -> None:
    client = make_client(Recorder(httpx.Response(200, json={"nothing": "useful"})))
    assert isinstance(await client.order_status(ENDPOINT, "SIM-9"), Unavailable)
    client = make_client(Recorder(httpx.Response(404)))
    assert isinstance(await client.order_status(ENDPOINT, "SIM-9"), Unavailable)
