"""One order placed over HTTP reaches the supplier service through the real broker."""

from __future__ import annotations

from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from services.supplier.app import create_app as supplier_app
from services.supplier.settings import SupplierSettings
from shared.testing import eventually
from tests.support.data import API_KEY, order_body, supplier_received
from tests.support.services import in_process


async def test_order_placed_over_http_reaches_the_supplier_service(
    database_url, settings_for, backend
):
    order_settings = settings_for(OrderSettings, await database_url("order"))
    supplier_settings = settings_for(SupplierSettings, await database_url("supplier"))
    async with (
        in_process(order_app, order_settings) as order,
        in_process(supplier_app, supplier_settings) as supplier,
    ):
        response = await order.client.post("/v1/orders", json=order_body(), headers=API_KEY)
        assert response.status_code == 201, response.text
        order_id = response.json()["id"]
        assert response.json()["status"] == "placed"

        received = await eventually(
            lambda: supplier_received(supplier.runtime), what="order at the supplier"
        )
        assert received == [order_id]

        fetched = await order.client.get(f"/v1/orders/{order_id}", headers=API_KEY)
        assert fetched.status_code == 200
        assert fetched.json()["lines"][0]["unit_price"] == "12.50"
        assert fetched.json()["total"] == "25.00"

        ready = await eventually(lambda: _ready(order.client), what="order service ready")
        assert ready["checks"] == {"database": True, "broker": True}


async def _ready(client):
    response = await client.get("/readyz")
    return response.json() if response.status_code == 200 else None
