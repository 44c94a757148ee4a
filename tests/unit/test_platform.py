"""Platform rules without I/O: inbox dedupe, retries, dead-lettering, settings, trace context."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from shared import tracing
from shared.bus import OutgoingMessage
from shared.consumer import MessageProcessor, PermanentError, on, subscriptions
from shared.events import OrderPlaced, PlacedLine, new_envelope
from shared.money import format_amount
from shared.settings import ServiceSettings
from shared.testing import InMemoryBus


class FakeUnitOfWork:
    """Inbox and effects in plain sets; commits are recorded, rollbacks discard."""

    def __init__(self, store: dict[str, set[str]]) -> None:
        self.store = store
        self._claims: set[str] = set()
        self._effects: set[str] = set()
        self.committed = False

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._claims, self._effects = set(), set()  # uncommitted work is rolled back

    async def claim_many(self, consumer: str, envelopes) -> list[bool]:
        fresh = []
        for envelope in envelopes:
            key = f"{consumer}:{envelope.id}"
            fresh.append(key not in self.store["inbox"] and key not in self._claims)
            self._claims.add(key)
        return fresh

    def record(self, effect: str) -> None:
        self._effects.add(effect)

    async def commit(self) -> None:
        self.store["inbox"] |= self._claims
        self.store["effects"] |= self._effects
        self.store.setdefault("commits", set()).add(len(self.store.get("commits", ())))
        self._claims, self._effects = set(), set()
        self.committed = True


def placed(order_id: str = "ord_1") -> OrderPlaced:
    return OrderPlaced(
        order_id=order_id,
        channel="storefront",
        currency="USD",
        lines=[PlacedLine(line_id="l1", sku="MUG", quantity=1, unit_price=Decimal("5.00"))],
        shipping_country="US",
        shipping_postal_code="10001",
        placed_at=datetime.now(UTC),
    )


def make_bus(handler, *, max_attempts: int = 3):
    store: dict[str, set[str]] = {"inbox": set(), "effects": set()}
    bus = InMemoryBus()
    processor = MessageProcessor(
        "supplier", subscriptions(on(OrderPlaced, handler)), lambda: FakeUnitOfWork(store)
    )
    bus.subscribe(processor, max_attempts=max_attempts)
    return bus, store


async def publish(bus: InMemoryBus, *values: bytes, topic: str = "order-placed") -> None:
    await bus.send_batch([OutgoingMessage(topic, b"ord_1", v) for v in values])


async def test_an_event_delivered_ten_times_has_one_effect():
    async def handler(envelope, data, uow):
        uow.record(data.order_id)

    bus, store = make_bus(handler)
    event = new_envelope(placed()).to_bytes()
    await publish(bus, *[event] * 10)
    assert await bus.drain() == 10
    assert store["effects"] == {"ord_1"}
    assert len(store["inbox"]) == 1


async def test_a_permanent_error_is_dead_lettered_at_once_and_later_messages_flow():
    calls = []

    async def handler(envelope, data, uow):
        calls.append(data.order_id)
        if data.order_id == "ord_poison":
            raise PermanentError("sku unknown to every supplier")
        uow.record(data.order_id)

    bus, store = make_bus(handler)
    await publish(
        bus,
        new_envelope(placed("ord_poison")).to_bytes(),
        new_envelope(placed("ord_ok")).to_bytes(),
    )
    await bus.drain()
    assert calls.count("ord_ok") == 1, "the good message is applied once, after the poison"
    assert store["effects"] == {"ord_ok"}
    [letter] = bus.messages("order-placed.dlq")
    headers = dict(letter.headers)
    assert headers["dlq.error_type"] == b"PermanentError"
    assert headers["dlq.attempts"] == b"1"
    assert headers["dlq.original_topic"] == b"order-placed"
    assert headers["dlq.error_message"] == b"sku unknown to every supplier"


async def test_a_transient_error_is_retried_then_dead_lettered_after_max_attempts():
    attempts = 0

    async def handler(envelope, data, uow):
        nonlocal attempts
        attempts += 1
        raise RuntimeError("downstream hiccup")  # infrastructure outages never count

    bus, store = make_bus(handler, max_attempts=4)
    await publish(bus, new_envelope(placed()).to_bytes())
    await bus.drain()
    assert attempts == 4
    assert store["inbox"] == set(), "a failed attempt leaves no inbox row behind"
    [letter] = bus.messages("order-placed.dlq")
    assert dict(letter.headers)["dlq.attempts"] == b"4"


async def test_a_transient_error_that_clears_succeeds_without_dead_letter():
    failures = iter([True, True, False])

    async def handler(envelope, data, uow):
        if next(failures):
            raise TimeoutError("slow disk")
        uow.record(data.order_id)

    bus, store = make_bus(handler, max_attempts=3)
    await publish(bus, new_envelope(placed()).to_bytes())
    await bus.drain()
    assert store["effects"] == {"ord_1"}
    assert bus.messages("order-placed.dlq") == []


@pytest.mark.parametrize(
    "raw",
    [
        b"{not json",
        b'{"specversion":"1.0"}',
        b"",
        new_envelope(placed()).to_bytes().replace(b'"USD"', b'"usd"'),
    ],
)
async def test_invalid_messages_are_dead_lettered_without_calling_the_handler(raw):
    async def handler(envelope, data, uow):
        raise AssertionError("handler must not see invalid messages")

    bus, _ = make_bus(handler)
    await publish(bus, raw)
    await bus.drain()
    [letter] = bus.messages("order-placed.dlq")
    assert dict(letter.headers)["dlq.error_type"] == b"InvalidEvent"
    assert letter.value == raw


async def test_an_event_on_the_wrong_topic_is_rejected():
    async def handler(envelope, data, uow):
        raise AssertionError("not for this topic")

    bus, _ = make_bus(handler)
    processor_topic_mismatch = new_envelope(placed()).model_copy(update={"type": "order-cancelled"})
    await publish(bus, processor_topic_mismatch.to_bytes())
    await bus.drain()
    assert len(bus.messages("order-placed.dlq")) == 1


KEY_1 = "k-live-1-" + "a" * 32  # production secrets are 32+ characters
KEY_2 = "k-live-2-" + "b" * 32
TOKEN = "s3cret-token-value-" + "c" * 32


def test_production_settings_refuse_development_secrets(monkeypatch):
    monkeypatch.delenv("DROPSHIP_API_KEYS", raising=False)
    with pytest.raises(ValidationError, match="DROPSHIP_API_KEYS"):
        ServiceSettings(environment="production", service_token=TOKEN)
    with pytest.raises(ValidationError, match="DROPSHIP_SERVICE_TOKEN"):
        ServiceSettings(environment="production", api_keys=KEY_1)
    ok = ServiceSettings(
        environment="production", api_keys=f"{KEY_1}, {KEY_2}", service_token=TOKEN
    )
    assert ok.api_key_set == {KEY_1, KEY_2}


def test_settings_read_the_documented_environment_variables(monkeypatch, tmp_path):
    from services.order.settings import OrderSettings

    monkeypatch.setenv("DROPSHIP_ORDER_DATABASE_URL", "postgresql+asyncpg://u@db/order_db")
    monkeypatch.setenv("DROPSHIP_ORDER_PORT", "9101")
    monkeypatch.setenv("DROPSHIP_KAFKA_BOOTSTRAP", "kafka:9092")
    settings = OrderSettings()
    assert settings.db_url == "postgresql+asyncpg://u@db/order_db"
    assert settings.http_port == 9101
    assert settings.kafka_bootstrap == "kafka:9092"
    monkeypatch.delenv("DROPSHIP_ORDER_DATABASE_URL")
    monkeypatch.setenv("DROPSHIP_DATA_DIR", str(tmp_path))
    assert OrderSettings().db_url == f"sqlite+aiosqlite:///{tmp_path.resolve()}/order.db"


def test_trace_context_continues_the_callers_trace():
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    child = tracing.new_traceparent(parent)
    assert child.startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert child != parent and tracing.is_valid(child)
    assert tracing.is_valid(tracing.new_traceparent("garbage"))


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        ("12.5", "USD", "12.50"),
        ("1200", "JPY", "1200"),
        ("1.5", "KWD", "1.500"),
        ("0", "EUR", "0.00"),
    ],
)
def test_money_is_formatted_at_the_currencys_precision(amount, currency, text):
    assert format_amount(Decimal(amount), currency) == text


async def test_a_batch_commits_once_and_a_poison_message_in_it_costs_only_itself():
    async def handler(envelope, data, uow):
        if data.order_id == "ord_bad":
            raise PermanentError("cannot route")
        uow.record(data.order_id)

    bus, store = make_bus(handler)
    good = [new_envelope(placed(f"ord_{i}")).to_bytes() for i in range(5)]
    await publish(bus, *good)
    await bus.drain()
    assert store["effects"] == {f"ord_{i}" for i in range(5)}
    assert len(store["commits"]) == 1, "five events, one transaction"

    await publish(
        bus,
        new_envelope(placed("ord_x")).to_bytes(),
        new_envelope(placed("ord_bad")).to_bytes(),
        new_envelope(placed("ord_y")).to_bytes(),
        good[0],
    )
    await bus.drain()
    assert {"ord_x", "ord_y"} <= store["effects"]
    assert "ord_bad" not in store["effects"]
    assert len(bus.messages("order-placed.dlq")) == 1
    assert len(store["inbox"]) == 7, "the repeated event was a duplicate"


async def test_a_deadlock_victim_is_retried_without_using_up_its_attempts():
    class Deadlock(Exception):
        def __init__(self) -> None:
            super().__init__("deadlock detected")
            self.orig = type("Orig", (), {"sqlstate": "40P01"})()

    outcomes = iter([Deadlock(), Deadlock(), Deadlock(), Deadlock(), None])

    async def handler(envelope, data, uow):
        failure = next(outcomes)
        if failure is not None:
            raise failure
        uow.record(data.order_id)

    bus, store = make_bus(handler, max_attempts=2)
    await publish(bus, new_envelope(placed()).to_bytes())
    await bus.drain()
    assert store["effects"] == {"ord_1"}, "four deadlocks with max_attempts=2, still applied"
    assert bus.messages("order-placed.dlq") == []


async def test_past_capacity_requests_are_shed_with_retry_after_and_service_recovers():
    import asyncio

    import httpx
    from fastapi import FastAPI

    from shared.http import LoadShedMiddleware, install_error_handlers
    from shared.testing import eventually

    gate = asyncio.Event()
    inside: list[int] = []
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/work")
    async def work() -> dict[str, str]:
        inside.append(1)
        await gate.wait()
        return {"done": "yes"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(LoadShedMiddleware, max_inflight=2, wait_s=0.05)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        busy = [asyncio.create_task(client.get("/work")) for _ in range(2)]

        async def both_inside() -> bool:
            return len(inside) == 2

        await eventually(both_inside, timeout=5, interval=0.005, what="two requests in flight")
        shed = await asyncio.gather(*(client.get("/work") for _ in range(3)))
        assert [r.status_code for r in shed] == [503, 503, 503]
        assert shed[0].headers["retry-after"] == "1"
        assert shed[0].json()["error"]["code"] == "overloaded"
        assert (await client.get("/healthz")).status_code == 200  # probes are never shed
        gate.set()
        assert [(await t).status_code for t in busy] == [200, 200]
        assert (await client.get("/work")).status_code == 200  # and it recovers
