"""The HTTP surface every service shares: error shape, auth, health, docs, trace context."""

from __future__ import annotations

import pytest

from services.metrics.app import create_app as metrics_app
from services.metrics.settings import MetricsSettings
from services.notify.app import create_app as notify_app
from services.notify.settings import NotifySettings
from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from services.supplier.app import create_app as supplier_app
from services.supplier.settings import SupplierSettings
from shared.events import Envelope
from tests.support.data import API_KEY, order_body
from tests.support.kafka import consume
from tests.support.services import in_process

APPS = {
    "order": (order_app, OrderSettings),
    "supplier": (supplier_app, SupplierSettings),
    "notify": (notify_app, NotifySettings),
    "metrics": (metrics_app, MetricsSettings),
}


@pytest.mark.parametrize("service", list(APPS))
async def test_every_service_has_health_readiness_docs_and_metrics(
    service, database_url, settings_for
):
    create, settings_cls = APPS[service]
    async with in_process(create, settings_for(settings_cls, await database_url(service))) as svc:
        assert (await svc.client.get("/healthz")).json() == {"status": "ok", "service": service}
        await svc.runtime.bus.wait_connected()
        ready = await svc.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {
            "database": True,
            "broker": True,
        }
        assert (await svc.client.get("/docs")).status_code == 200
        assert (await svc.client.get("/openapi.json")).json()["info"]["title"].lower().find(
            service
        ) >= 0
        metrics = await svc.client.get("/metrics")
        assert "dropship_outbox_backlog" in metrics.text
        missing = await svc.client.get("/no/such/path")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_errors_have_the_contract_shape_and_change_nothing(database_url, settings_for):
    async with in_process(
        order_app, settings_for(OrderSettings, await database_url("order"), consumers_enabled=False)
    ) as order:
        unauthorised = await order.client.post("/v1/orders", json=order_body())
        assert unauthorised.status_code == 401
        assert unauthorised.json()["error"]["code"] == "unauthorized"

        bad = order_body()
        bad["lines"][0]["quantity"] = 0
        rejected = await order.client.post("/v1/orders", json=bad, headers=API_KEY)
        assert rejected.status_code == 422
        error = rejected.json()["error"]
        assert error["code"] == "validation_error"
        assert error["details"][0]["field"] == "body.lines.0.quantity"
        assert "greater than or equal to 1" in error["details"][0]["reason"]

        garbage = await order.client.post(
            "/v1/orders",
            content=b"{not json",
            headers={**API_KEY, "Content-Type": "application/json"},
        )
        assert garbage.status_code == 422

        unknown = await order.client.get("/v1/orders/ord_missing", headers=API_KEY)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"
        assert await order.runtime.relay.backlog() == 0, "rejected requests emitted nothing"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_the_callers_trace_context_travels_in_the_event(database_url, settings_for, broker):
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with in_process(
        order_app, settings_for(OrderSettings, await database_url("order"), consumers_enabled=False)
    ) as order:
        response = await order.client.post(
            "/v1/orders",
            json=order_body(),
            headers={**API_KEY, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        )
        assert response.status_code == 201
        records = await consume(broker.bootstrap, "order-placed", 1)
        envelope = Envelope.from_bytes(records[0].value)
        assert envelope.subject == response.json()["id"]
        assert envelope.traceparent is not None and envelope.traceparent.split("-")[1] == trace_id
