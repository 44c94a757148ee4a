"""Idempotency-Key fingerprints: a retry whose JSON is spelled differently but validates to
the same order is still the same request."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from services.order.app import create_app
from services.order.settings import OrderSettings
from services.order.tables import customer_order
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
