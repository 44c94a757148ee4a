"""Notify's contact lookups against a scripted order service (httpx's MockTransport)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable

import httpx
import pytest
from tenacity import wait_none

from services.notify.channels import TransientSendError
from services.notify.contacts import ContactBatch, ContactBook, OrderUnknown

Handler = Callable[[httpx.Request], httpx.Response]


def person(order_id: str, redacted: bool = False) -> dict[str, object]:
    if redacted:
        return {"order_id": order_id, "name": None, "email": None, "phone": None,
                "locale": "en", "redacted": True}  # fmt: skip
    return {"order_id": order_id, "name": f"N {order_id}", "email": f"{order_id}@example.com",
            "phone": None, "locale": "zh-CN", "redacted": False}  # fmt: skip


def book(handler: Handler) -> tuple[ContactBook, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    http = httpx.AsyncClient(transport=httpx.MockTransport(record))
    contacts = ContactBook(http, "http://order/", "tok")
    contacts._retrying = contacts._retrying.copy(wait=wait_none())  # no backoff in unit tests
    return contacts, seen


def lookup_service(request: httpx.Request) -> httpx.Response:
    assert request.url.path == "/v1/contacts:lookup"
    assert request.headers["authorization"] == "Bearer tok"
    ids = json.loads(request.content)["order_ids"]
    known = [person(i, redacted=i == "gone") for i in ids if i != "nope"]
    return httpx.Response(200, json={"items": known, "unknown": ["nope"] * ("nope" in ids)})


async def test_one_request_answers_every_send_of_the_batch():
    contacts, seen = book(lookup_service)
    batch = ContactBatch(contacts, ["a", "b", "a", "gone", "nope"])
    a, b, gone = await asyncio.gather(batch.get("a"), batch.get("b"), batch.get("gone"))
    with pytest.raises(OrderUnknown, match="nope"):
        await batch.get("nope")
    assert len(seen) == 1 and json.loads(seen[0].content) == {
        "order_ids": ["a", "b", "gone", "nope"]
    }
    assert (a.email, b.email, a.locale) == ("a@example.com", "b@example.com", "zh-CN")
    assert gone.redacted and gone.email is None
    assert "a@example.com" not in repr(a)


async def test_a_failing_lookup_fails_every_send_once_retried():
    contacts, seen = book(lambda _: httpx.Response(503))
    batch = ContactBatch(contacts, ["a", "b"])
    for order_id in ("a", "b"):
        with pytest.raises(TransientSendError, match="order service answered 503"):
            await batch.get(order_id)
    assert len(seen) == 3  # the batch's retries, not three per send


async def test_an_unreachable_order_service_is_transient():
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    contacts, _ = book(down)
    with pytest.raises(TransientSendError, match="order service unreachable"):
        await ContactBatch(contacts, ["a"]).get("a")


async def test_an_older_order_service_is_asked_order_by_order(caplog):
    def older(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(405)
        order_id = request.url.path.split("/")[3]
        if order_id == "nope":
            return httpx.Response(404)
        return httpx.Response(200, json=person(order_id))

    contacts, seen = book(older)
    with caplog.at_level(logging.WARNING, "services.notify.contacts"):
        first = ContactBatch(contacts, ["a", "nope"])
        assert (await first.get("a")).email == "a@example.com"
        with pytest.raises(OrderUnknown):
            await first.get("nope")
        assert (await ContactBatch(contacts, ["b"]).get("b")).email == "b@example.com"
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/v1/contacts:lookup"),
        ("GET", "/v1/orders/a/contact"),
        ("GET", "/v1/orders/nope/contact"),
        ("GET", "/v1/orders/b/contact"),  # no second batch try within BATCH_RETRY_S
    ]
    assert len([r for r in caplog.records if "batch contact lookup" in r.message]) == 1


async def test_more_ids_than_one_request_takes_are_split():
    contacts, seen = book(lookup_service)
    ids = [f"o{i}" for i in range(230)]
    batch = ContactBatch(contacts, ids)
    assert (await batch.get("o229")).email == "o229@example.com"
    assert [len(json.loads(r.content)["order_ids"]) for r in seen] == [100, 100, 30]
