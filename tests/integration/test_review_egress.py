"""A supplier's `api_base_url` cannot reach our own network in production (review finding
7): refused when saved (422) and, whatever the name resolves to, when connecting."""

from __future__ import annotations

import httpx
import pytest

from services.order.app import create_app as create_order
from services.order.settings import OrderSettings
from services.supplier.adapter import (
    OrderLine,
    PlaceOrderRequest,
    Received,
    SupplierClient,
    SupplierEndpoint,
    Unavailable,
)
from services.supplier.app import create_app
from services.supplier.breaker import CircuitBreaker
from services.supplier.settings import SupplierSettings
from shared.egress import EgressPolicy, guarded_client
from shared.infra import free_port
from tests.support.data import API_KEY
from tests.support.services import served
from tests.support.supplier import ADMIN, sim_orders

pytestmark = pytest.mark.integration


def _supplier(key: str, url: str) -> dict:
    return {
        "name": key.title(),
        "supplier_key": key,
        "api_base_url": url,
        "credentials": {"api_key": f"sim-key-{key}", "webhook_secret": f"sim-secret-{key}"},
    }


async def _service(database_url, settings_for, order_contacts, **overrides):
    port = free_port()
    settings = settings_for(
        SupplierSettings,
        await database_url("supplier"),
        port=port,
        order_url=order_contacts.url,
        consumers_enabled=False,
        **overrides,
    )
    return served(create_app, settings, port)


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8010/acme",
        "http://localhost:8010/acme",
        "http://10.0.0.5/acme",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8010/acme",
        "http://[::ffff:127.0.0.1]/acme",
        "http://0.0.0.0:8010/acme",
        "http://224.0.0.1/acme",
    ],
)
async def test_an_internal_api_base_url_is_refused_when_saved(
    database_url, settings_for, order_contacts, url
):
    async with await _service(database_url, settings_for, order_contacts, egress_guard=True) as svc:
        created = await svc.client.post("/v1/suppliers", json=_supplier("acme", url), headers=ADMIN)
        assert created.status_code == 422, created.text
        [detail] = created.json()["error"]["details"]
        assert detail["field"] == "body.api_base_url"
        assert "internal address refused" in detail["reason"]

        good = _supplier("acme", "https://api.supplier.example/v1")
        created = await svc.client.post("/v1/suppliers", json=good, headers=ADMIN)
        assert created.status_code == 201, created.text
        sid = created.json()["id"]
        patched = await svc.client.patch(
            f"/v1/suppliers/{sid}", json={"api_base_url": url}, headers=ADMIN
        )
        assert patched.status_code == 422, patched.text
        read = await svc.client.get(f"/v1/suppliers/{sid}", headers=ADMIN)
        assert read.json()["api_base_url"] == "https://api.supplier.example/v1", "nothing changed"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_allow_listed_on_premise_supplier_and_development_keep_working(
    database_url, settings_for, order_contacts, simulator
):
    url = f"{simulator.url}/onprem"  # the simulator listens on 127.0.0.1
    async with await _service(
        database_url,
        settings_for,
        order_contacts,
        egress_guard=True,
        supplier_allowed_hosts="127.0.0.0/8, erp.corp.example",
    ) as svc:
        created = await svc.client.post(
            "/v1/suppliers", json=_supplier("onprem", url), headers=ADMIN
        )
        assert created.status_code == 201, created.text
    async with await _service(database_url, settings_for, order_contacts) as dev:
        assert not dev.runtime.settings.guards_egress, "only production guards by default"
        created = await dev.client.post("/v1/suppliers", json=_supplier("dev", url), headers=ADMIN)
        assert created.status_code == 201, created.text


def _resolver(answers: dict[str, list[list[str]]]):
    """A DNS stand-in: each name answers its next list of addresses (the last repeats)."""
    asked: dict[str, int] = {}

    async def resolve(host: str, port: int) -> list[str]:
        n = asked.get(host, 0)
        asked[host] = n + 1
        series = answers[host]
        return series[min(n, len(series) - 1)]

    return resolve


def _order(callback: str) -> PlaceOrderRequest:
    return PlaceOrderRequest(
        idempotency_key="so_egress",
        reference="so_egress",
        order_id="ord_egress",
        lines=[OrderLine("SIM-MUG", 1)],
        ship_country="US",
        ship_postal_code="10001",
        callback_url=callback,
        ship_to={
            "name": "Ada",
            "line1": "1 Main St",
            "city": "New York",
            "postal_code": "10001",
            "country": "US",
        },
    )


async def test_a_name_resolving_to_loopback_is_refused_at_connect_time(simulator):
    port = httpx.URL(simulator.url).port
    endpoint = SupplierEndpoint("sup_x", f"http://supplier.example:{port}/rebind", "sim-key-rebind")
    # the name looked public when the URL was saved; now it answers 127.0.0.1 (rebinding)
    policy = EgressPolicy(
        True, resolver=_resolver({"supplier.example": [["93.184.216.34"], ["127.0.0.1"]]})
    )
    assert await policy.check_url(endpoint.base_url) is None
    async with guarded_client(policy) as http:
        client = SupplierClient(http, CircuitBreaker(), max_attempts=3, backoff_initial_s=0.01)
        outcome = await client.place_order(endpoint, _order("http://cb.example/x"))
    assert isinstance(outcome, Unavailable), outcome
    assert outcome.reason.startswith("bad destination") and "loopback" in outcome.reason
    assert outcome.attempts == 1, "a refused destination is not retried"
    assert await sim_orders(type("S", (), {"simulator": simulator}), "rebind") == []


async def test_an_allow_listed_name_connects_to_the_address_that_was_checked(simulator):
    port = httpx.URL(simulator.url).port
    endpoint = SupplierEndpoint("sup_y", f"http://erp.corp.example:{port}/pinned", "sim-key-pinned")
    # the name does not exist in real DNS: reaching the simulator proves the connection
    # went to the address the guard resolved and checked, not to a second lookup
    policy = EgressPolicy.parse(True, "127.0.0.0/8")
    policy = EgressPolicy(
        True,
        networks=policy.networks,
        resolver=_resolver({"erp.corp.example": [["127.0.0.1"]]}),
    )
    async with guarded_client(policy) as http:
        client = SupplierClient(http, CircuitBreaker(), max_attempts=1)
        outcome = await client.place_order(endpoint, _order("http://127.0.0.1:9/cb"))
    assert isinstance(outcome, Received), outcome
    assert len(await sim_orders(type("S", (), {"simulator": simulator}), "pinned")) == 1


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_shop_at_an_internal_address_is_refused_when_saved(database_url, settings_for):
    port = free_port()
    settings = settings_for(
        OrderSettings,
        await database_url("order"),
        port=port,
        consumers_enabled=False,
        egress_guard=True,
        shop_allowed_hosts="shop.corp.example",
    )
    shop = {
        "platform": "shopify",
        "domain": "internal.myshopify.com",
        "webhook_secret": "shpss_internal_secret_value",
        "api_base_url": "http://169.254.169.254/latest",
        "access_token": "shpat_internal_token",
    }
    async with served(create_order, settings, port) as order:
        refused = await order.client.post("/v1/shops", json=shop, headers=API_KEY)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["details"][0]["field"] == "body.api_base_url"
        allowed = {**shop, "api_base_url": "https://shop.corp.example"}
        created = await order.client.post("/v1/shops", json=allowed, headers=API_KEY)
        assert created.status_code == 201, created.text
        patched = await order.client.patch(
            f"/v1/shops/{created.json()['id']}",
            json={"api_base_url": "http://10.1.2.3"},
            headers=API_KEY,
        )
        assert patched.status_code == 422, patched.text
