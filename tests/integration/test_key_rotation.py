"""The PII key rotation runbook, followed end to end: every sealed value moves to the new key
(orders' PII, shops' secrets, supplier credentials) and the services work on it alone."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from services.order.app import create_app as order_app
from services.order.marketplaces import sign
from services.order.pii import generate_key
from services.order.settings import OrderSettings
from tests.support.data import API_KEY, order_body
from tests.support.kafka import publish_envelopes
from tests.support.services import in_process
from tests.support.supplier import add_supplier, placed, states

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SERVICE = {"Authorization": "Bearer dev-service-token"}


def run_module(module: str, env: dict[str, str]) -> str:
    """Run a runbook command as an operator would, in its own process."""
    done = subprocess.run(
        [sys.executable, "-m", module],
        cwd=ROOT,
        env={**os.environ, "DROPSHIP_LOG_JSON": "false", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def order_settings(settings_for, url: str, key: str) -> OrderSettings:
    settings: OrderSettings = settings_for(
        OrderSettings, url, pii_key=key, consumers_enabled=False, writeback_enabled=False
    )
    return settings


async def signed_order(order, domain: str, secret: str) -> int:
    body = (FIXTURES / "shopify" / "orders_create.json").read_bytes()
    response = await order.client.post(
        "/v1/webhooks/shopify",
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Shopify-Topic": "orders/create",
            "X-Shopify-Shop-Domain": domain,
            "X-Shopify-Hmac-Sha256": sign(body, secret),
            "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        },
    )
    return response.status_code


async def test_rotation_moves_order_pii_and_shop_secrets_to_the_new_key(database_url, settings_for):
    url = await database_url("order")
    old, new = generate_key(), generate_key()
    domain, secret = f"rot-{uuid.uuid4().hex[:6]}.myshopify.com", "shop-secret-rotated"
    async with in_process(order_app, order_settings(settings_for, url, old)) as before:
        made = await before.client.post("/v1/orders", json=order_body(), headers=API_KEY)
        shop = await before.client.post(
            "/v1/shops",
            json={
                "platform": "shopify",
                "domain": domain,
                "webhook_secret": secret,
                "api_base_url": "https://rot.example/admin",
                "access_token": "shpat_rotation",
            },
            headers=API_KEY,
        )
        assert made.status_code == 201 and shop.status_code == 201, shop.text

    ring = f"k2027:{new},{old}"
    printed = run_module(
        "services.order.rotate_pii",
        {"DROPSHIP_DATABASE_URL": url, "DROPSHIP_PII_KEY": ring, "DROPSHIP_ENVIRONMENT": "test"},
    )
    assert "1 order(s) and 1 shop(s)" in printed and "0 more" in printed, printed

    async with in_process(order_app, order_settings(settings_for, url, f"k2027:{new}")) as after:
        async with after.runtime.uow() as uow:
            sealed = (
                await uow.session.execute(
                    text("SELECT webhook_secret, access_token FROM marketplace_shop")
                )
            ).one()
        assert all(value.startswith("v1.k2027.") for value in sealed)
        listed = await after.client.get("/v1/shops", headers=API_KEY)
        assert listed.status_code == 200 and [s["domain"] for s in listed.json()["items"]] == [
            domain
        ]
        assert await signed_order(after, domain, secret) == 200, "verified with the new key"
        assert await signed_order(after, domain, "a-wrong-secret") == 401
        contact = await after.client.get(f"/v1/orders/{made.json()['id']}/contact", headers=SERVICE)
        assert contact.json()["email"] == "ann@example.com"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_rotation_moves_supplier_credentials_to_the_new_key(
    supplier_with, database_url, broker
):
    old, new = generate_key(), generate_key()
    async with supplier_with(pii_key=old) as before:
        supplier_id = await add_supplier(before, "rotating", offers=[("MUG", "3.00", 100, 24)])
        url = str(before.runtime.settings.database_url)

    printed = run_module(
        "services.supplier.rotate_secrets",
        {
            "DROPSHIP_DATABASE_URL": url,
            "DROPSHIP_PII_KEY": f"k2027:{new},{old}",
            "DROPSHIP_ENVIRONMENT": "test",
        },
    )
    assert "credentials of 1 supplier(s)" in printed and "0 remaining" in printed, printed

    async with supplier_with(pii_key=f"k2027:{new}", database_url=url) as after:
        event = placed(("MUG", 1, "12.50"))
        await publish_envelopes(broker.bootstrap, [event])
        # the simulator checks the supplier's API key: the order is taken only if the
        # credentials opened under the new key alone
        [taken] = await states(after, event.subject, "accepted")
        assert taken["supplier_id"] == supplier_id
