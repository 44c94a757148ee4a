"""Hostile input gets a 4xx, never a 500: oversized bodies (refused while streaming),
non-ASCII credentials, JSON nested past the parser, CSV fields past the csv module's limit."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from services.order.app import create_app as create_order
from services.order.marketplaces import sign
from services.order.settings import OrderSettings
from shared.infra import free_port
from tests.support.data import API_KEY
from tests.support.services import served

SHOPIFY_SECRET = "shpss_security_test_secret"
WEBHOOK_LIMIT = 64 * 1024
DEFAULT_LIMIT = 128 * 1024


@pytest.fixture
async def order(database_url, settings_for):
    port = free_port()
    settings = settings_for(
        OrderSettings,
        await database_url("order"),
        port=port,
        consumers_enabled=False,
        shopify_secret=SHOPIFY_SECRET,
        max_webhook_body_bytes=WEBHOOK_LIMIT,
        max_body_bytes=DEFAULT_LIMIT,
    )
    async with served(create_order, settings, port) as svc:
        yield svc


async def _raw_request(port: int, head: str, chunks: list[bytes], *, finish: bool) -> bytes:
    """Send `head` and `chunks` (chunked encoding); read the answer without ending the body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        for chunk in chunks:
            writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            try:
                await writer.drain()
            except ConnectionError:
                break
        if finish:
            writer.write(b"0\r\n\r\n")
        async with asyncio.timeout(10):
            return await reader.read(65536)
    finally:
        writer.close()


@pytest.mark.integration
async def test_a_chunked_webhook_over_its_limit_is_refused_before_the_body_ends(order):
    """The 413 arrives while the body is still open: the service never buffered it all."""
    port = int(order.url.rsplit(":", 1)[1])
    head = (
        "POST /v1/webhooks/shopify HTTP/1.1\r\nHost: order\r\n"
        "Content-Type: application/json\r\nX-Shopify-Topic: orders/create\r\n"
        "X-Shopify-Hmac-Sha256: bm90LXNpZ25lZA==\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    answer = await _raw_request(port, head, [b" " * 8192] * 12, finish=False)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] == b"413", answer[:300]
    body = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "payload_too_large"
    assert str(WEBHOOK_LIMIT) in body["error"]["message"]


@pytest.mark.integration
async def test_a_declared_length_over_the_limit_is_refused_before_reading(order):
    port = int(order.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/orders HTTP/1.1\r\nHost: order\r\nContent-Type: application/json\r\n"
        b"X-API-Key: dev-api-key\r\nContent-Length: 50000000\r\n\r\n"
    )
    await writer.drain()
    async with asyncio.timeout(10):
        answer = await reader.read(65536)
    writer.close()
    assert answer.split(b"\r\n", 1)[0].split()[1] == b"413"
    assert b"payload_too_large" in answer


@pytest.mark.integration
async def test_bodies_within_the_limit_still_work_and_each_route_has_its_own(order):
    body = b'{"a": "' + b"x" * (WEBHOOK_LIMIT + 1000) + b'"}'  # over the webhook limit only
    headers = {"Content-Type": "application/json", **API_KEY}
    placed = await order.client.post("/v1/orders", content=body, headers=headers)
    assert placed.status_code == 422, placed.text  # read in full and validated
    signed = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": sign(body, SHOPIFY_SECRET),
        "X-Shopify-Webhook-Id": "security-1",
    }
    refused = await order.client.post("/v1/webhooks/shopify", content=body, headers=signed)
    assert refused.status_code == 413
    assert refused.json()["error"]["code"] == "payload_too_large"


@pytest.mark.integration
@pytest.mark.parametrize("credential", ["ключ-магазина", "clé-🔑", "\u00e9t\u00e9"])
async def test_non_ascii_credentials_are_unauthorized_not_a_server_error(order, credential):
    raw = credential.encode("utf-8")
    async with httpx.AsyncClient(base_url=order.url) as client:
        keyed = await client.get("/v1/orders", headers=[(b"X-API-Key", raw)])
        assert keyed.status_code == 401, keyed.text
        assert keyed.json()["error"]["code"] == "unauthorized"
        bearer = await client.get(
            "/v1/orders/ord_00000000000000000000000000/contact",
            headers=[(b"Authorization", b"Bearer " + raw)],
        )
        assert bearer.status_code == 401, bearer.text


@pytest.mark.integration
async def test_json_nested_past_the_parser_is_a_4xx(order):
    body = b"[" * 100_000 + b"]" * 100_000
    answer = await order.client.post(
        "/v1/orders", content=body, headers={"Content-Type": "application/json", **API_KEY}
    )
    assert 400 <= answer.status_code < 500, answer.text
    signed = {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": sign(body, SHOPIFY_SECRET),
        "X-Shopify-Webhook-Id": "security-nested",
    }
    hooked = await order.client.post("/v1/webhooks/shopify", content=body, headers=signed)
    assert 400 <= hooked.status_code < 500, hooked.text
