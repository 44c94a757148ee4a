"""Idempotency-Key fingerprints: a key stored under the fingerprint scheme before still
answers its retry (same body: the stored answer; another body: 409), and a retry whose JSON
is spelled differently but validates to the same order is still the same request."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select, update

from services.order.api import order_fingerprint, order_fingerprint_before
from services.order.app import create_app
from services.order.schemas import OrderIn
from services.order.settings import OrderSettings
from services.order.tables import customer_order, idempotency_key
from tests.support.data import API_KEY, order_body
from tests.support.services import in_process


@pytest.fixture
async def order(database_url, settings_for):
    settings = settings_for(OrderSettings, await database_url("order"), consumers_enabled=False)
    async with in_process(create_app, settings) as svc:
        yield svc


async def count_orders(svc) -> int:
    async with svc.runtime.uow() as uow:
        return int(await uow.session.scalar(select(func.count()).select_from(customer_order)))


async def stored_hash(svc, key: str) -> str:
    async with svc.runtime.uow() as uow:
        query = select(idempotency_key.c.request_hash).where(idempotency_key.c.key == key)
        return str(await uow.session.scalar(query))


async def store_as_before(svc, key: str, body: dict) -> None:
    """Rewrite the key's fingerprint to the one the scheme before stored for `body`."""
    before = order_fingerprint_before(OrderIn.model_validate(body))
    assert before != order_fingerprint(OrderIn.model_validate(body)), "the schemes differ"
    async with svc.runtime.uow() as uow:
        await uow.session.execute(
            update(idempotency_key).where(idempotency_key.c.key == key).values(request_hash=before)
        )
        await uow.commit()


async def test_a_key_stored_under_the_fingerprint_before_still_answers_its_retries(order):
    body = order_body(external_id="web-old-key")
    headers = {**API_KEY, "Idempotency-Key": "stored-before"}
    first = await order.client.post("/v1/orders", json=body, headers=headers)
    assert first.status_code == 201
    new_scheme = order_fingerprint(OrderIn.model_validate(body))
    assert await stored_hash(order, "stored-before") == new_scheme
    await store_as_before(order, "stored-before", body)

    again = await order.client.post("/v1/orders", json=body, headers=headers)
    assert again.status_code == 201 and again.content == first.content
    assert again.headers.get("Idempotent-Replayed") == "true"

    other = await order.client.post(
        "/v1/orders", json=order_body(external_id="web-old-key", quantity=3), headers=headers
    )
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert await count_orders(order) == 1


async def test_the_same_order_spelled_differently_is_the_same_request(order):
    body = order_body()
    headers = {**API_KEY, "Idempotency-Key": "respelled", "Content-Type": "application/json"}
    first = await order.client.post("/v1/orders", content=json.dumps(body), headers=headers)
    respelled = json.dumps(dict(reversed(body.items())), indent=2)  # other key order, spacing
    again = await order.client.post("/v1/orders", content=respelled, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert await count_orders(order) == 1
