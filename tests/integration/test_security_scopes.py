"""Keys and scopes: the metrics API and dashboard need an admin key; a storefront key places
and reads orders but cannot manage suppliers, import offers or redact customers."""

from __future__ import annotations

import pytest

from services.metrics.app import create_app as metrics_app
from services.metrics.settings import MetricsSettings
from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from services.supplier.app import create_app as supplier_app
from services.supplier.settings import SupplierSettings
from tests.support.data import order_body
from tests.support.services import in_process

STOREFRONT = {"X-API-Key": "storefront-key-for-scope-tests"}
ADMIN = {"X-API-Key": "admin-key-for-scope-tests"}
SCOPED = {"api_keys": STOREFRONT["X-API-Key"], "admin_api_keys": ADMIN["X-API-Key"]}
REDACT = {"email": "ann@example.com"}


@pytest.mark.integration
async def test_metrics_api_and_dashboard_need_an_admin_key(database_url, settings_for):
    settings = settings_for(MetricsSettings, await database_url("metrics"), **SCOPED)
    async with in_process(metrics_app, settings) as svc:
        for path in ("/v1/kpis", "/v1/suppliers/ranking", "/v1/events/counts", "/"):
            anonymous = await svc.client.get(path)
            assert anonymous.status_code == 401, f"{path} is public"
            assert anonymous.json()["error"]["code"] == "unauthorized"
            storefront = await svc.client.get(path, headers=STOREFRONT)
            assert storefront.status_code == 401, f"a storefront key reads {path}"
        assert (await svc.client.get("/v1/kpis", headers=ADMIN)).status_code == 200
        page = await svc.client.get("/", params={"key": ADMIN["X-API-Key"]})
        assert page.status_code == 200 and "<html" in page.text.lower()
        # the page's own calls carry the cookie it was given
        assert (await svc.client.get("/v1/kpis")).status_code == 200
        svc.client.cookies.clear()
        assert (await svc.client.get("/v1/kpis")).status_code == 401


@pytest.mark.integration
async def test_a_storefront_key_places_orders_but_cannot_redact(database_url, settings_for):
    settings = settings_for(OrderSettings, await database_url("order"), **SCOPED)
    async with in_process(order_app, settings) as svc:
        for key in (STOREFRONT, ADMIN):
            placed = await svc.client.post("/v1/orders", json=order_body(), headers=key)
            assert placed.status_code == 201, placed.text
        order_url = f"/v1/orders/{placed.json()['id']}"
        before = (await svc.client.get(order_url, headers=STOREFRONT)).json()
        refused = await svc.client.post("/v1/customers/redact", json=REDACT, headers=STOREFRONT)
        assert refused.status_code == 401
        after = (await svc.client.get(order_url, headers=STOREFRONT)).json()
        assert after == before, "nothing was redacted"
        done = await svc.client.post("/v1/customers/redact", json=REDACT, headers=ADMIN)
        assert done.status_code == 200 and done.json()["redacted"] == 2


@pytest.mark.integration
async def test_a_storefront_key_cannot_manage_suppliers_or_import_offers(
    database_url, settings_for
):
    settings = settings_for(SupplierSettings, await database_url("supplier"), **SCOPED)
    async with in_process(supplier_app, settings) as svc:
        csv = {"Content-Type": "text/csv"}
        for key, expected in ((STOREFRONT, 401), (ADMIN, 422)):
            created = await svc.client.post("/v1/suppliers", json={}, headers=key)
            assert created.status_code == expected, created.text
            imported = await svc.client.post(
                "/v1/offers/import", content=b"sku\n", headers={**key, **csv}
            )
            assert imported.status_code == expected, imported.text
        assert (await svc.client.get("/v1/suppliers", headers=STOREFRONT)).status_code == 401
        assert (await svc.client.get("/v1/suppliers", headers=ADMIN)).status_code == 200


@pytest.mark.integration
async def test_without_admin_keys_storefront_keys_keep_admin_rights(database_url, settings_for):
    """Backward compatible: a deployment that sets no DROPSHIP_ADMIN_API_KEYS works as before."""
    settings = settings_for(
        SupplierSettings, await database_url("supplier"), api_keys=STOREFRONT["X-API-Key"]
    )
    async with in_process(supplier_app, settings) as svc:
        assert (await svc.client.get("/v1/suppliers", headers=STOREFRONT)).status_code == 200
