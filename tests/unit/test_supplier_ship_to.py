"""The ship-to client: tolerant of what the order service serves, never showing an address."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from prometheus_client import REGISTRY

from services.supplier.ship_to import Redacted, ShipTo, ShipToBook, ShipToUnavailable
from shared.testing import eventually

FULL = {
    "name": "Ada",
    "phone": "+1",
    "email": "a@x",
    "line1": "1 Main",
    "line2": None,
    "city": "NYC",
    "region": "NY",
    "postal_code": "10001",
    "country": "US",
}


def book(handler) -> ShipToBook:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ShipToBook(http, "http://order", "tok", retry_for_s=0.3)


async def test_the_full_address_is_read_with_the_service_token():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(200, json={"order_id": "o", "redacted": False, **FULL})

    found = await book(handler).fetch("o")
    assert isinstance(found, ShipTo) and found.to_json() == FULL
    assert seen == ["Bearer tok"]
    assert "Main" not in repr(found) and "Ada" not in repr(found)


async def test_an_older_order_service_without_address_fields_falls_back_to_what_is_known():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"name": "Ada", "email": "a@x", "redacted": False})

    found = await book(handler).fetch("o", country="DE", postal_code="10115")
    assert isinstance(found, ShipTo)
    assert (found.name, found.country, found.postal_code, found.line1) == (
        "Ada",
        "DE",
        "10115",
        None,
    )


async def test_a_nested_ship_to_is_read_too():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"name": "Ada", "ship_to": {**FULL, "name": None}})

    found = await book(handler).fetch("o")
    assert isinstance(found, ShipTo) and found.line1 == "1 Main" and found.name == "Ada"


async def test_an_erased_customer_is_redacted():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"redacted": True, "name": None})

    assert isinstance(await book(handler).fetch("o"), Redacted)


@pytest.mark.parametrize("status", [404, 401, 500, 503])
async def test_anything_else_is_tried_again_later(status):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json={})

    with pytest.raises(ShipToUnavailable):
        await book(handler).fetch("o")


async def test_a_brief_order_service_outage_is_waited_out() -> None:
    answers = iter([httpx.ConnectError("restarting"), httpx.Response(503)])

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers, None)
        if isinstance(answer, Exception):
            raise answer
        if answer is not None:
            return answer
        return httpx.Response(200, json={"redacted": True})

    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    book = ShipToBook(http, "http://order", "tok", retry_for_s=10)
    assert isinstance(await book.fetch("ord-1"), Redacted)


async def test_two_supplier_orders_of_one_order_placed_at_once_share_one_lookup():
    calls = []
    answer = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        await answer.wait()
        return httpx.Response(200, json={"redacted": False, **FULL})

    contacts = book(handler)
    both = asyncio.gather(contacts.fetch("o"), contacts.fetch("o"), contacts.fetch("p"))

    async def under_way() -> bool:
        return len(calls) == 2

    await eventually(under_way, interval=0.01, what="both lookups under way")
    answer.set()
    first, second, other = await both
    assert isinstance(first, ShipTo) and first.to_json() == FULL and second == first
    assert isinstance(other, ShipTo)
    assert sorted(calls) == ["/v1/orders/o/contact", "/v1/orders/p/contact"]
    # answered, it is forgotten: a later placement asks again
    await contacts.fetch("o")
    assert len(calls) == 3


async def test_one_caller_cancelled_leaves_the_shared_lookup_to_the_other():
    answer = asyncio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        await answer.wait()
        return httpx.Response(200, json={"redacted": False, **FULL})

    contacts = book(handler)
    first = asyncio.create_task(contacts.fetch("o"))
    second = asyncio.create_task(contacts.fetch("o"))
    await asyncio.sleep(0)  # both waiting on the one lookup
    first.cancel()
    answer.set()
    assert isinstance(await second, ShipTo)
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_shared_lookup_fails_every_caller_and_is_not_remembered():
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503)

    contacts = book(handler)
    results = await asyncio.gather(contacts.fetch("o"), contacts.fetch("o"), return_exceptions=True)
    assert all(isinstance(r, ShipToUnavailable) for r in results)
    before = len(calls)
    with pytest.raises(ShipToUnavailable):
        await contacts.fetch("o")
    assert len(calls) > before


def requests(endpoint: str) -> float:
    """`/metrics`: the supplier's requests to the order service for destinations."""
    name = "dropship_supplier_ship_to_requests_total"
    return REGISTRY.get_sample_value(name, {"endpoint": endpoint}) or 0


def lingering(handler) -> ShipToBook:
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return ShipToBook(http, "http://order", "tok", retry_for_s=0.3, linger_s=0.005)


def contact(order_id: str, **ship_to) -> dict:
    return {"order_id": order_id, "redacted": False, "name": "Ada", "ship_to": {**FULL, **ship_to}}


async def test_orders_placed_together_have_their_destinations_read_in_one_request():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.headers["Authorization"]))
        asked = json.loads(request.content)
        assert asked == {"order_ids": ["o", "p", "gone"], "ship_to": True}
        items = [
            contact("o"),
            contact("p", line1="2 Side", country=None),
            {"order_id": "gone", "redacted": True, "ship_to": None},
        ]
        return httpx.Response(200, json={"items": items, "unknown": []})

    contacts = lingering(handler)
    before = {e: requests(e) for e in ("batch", "single")}
    o, p, again, gone = await asyncio.gather(
        contacts.fetch("o"),
        contacts.fetch("p", country="DE"),
        contacts.fetch("o"),
        contacts.fetch("gone"),
    )
    assert seen == [("POST", "/v1/contacts:lookup", "Bearer tok")]
    assert isinstance(o, ShipTo) and o.to_json() == FULL and again == o
    assert isinstance(p, ShipTo) and (p.line1, p.country) == ("2 Side", "DE")  # the fallback
    assert isinstance(gone, Redacted)
    assert {e: requests(e) - before[e] for e in before} == {"batch": 1, "single": 0}


async def test_what_the_lookup_does_not_answer_is_asked_for_alone():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.method == "POST":  # an older order service: no `ship_to`; `x` unknown
            items = [contact("o"), {"order_id": "p", "redacted": False, "name": "Bo"}]
            return httpx.Response(200, json={"items": items, "unknown": ["x"]})
        if request.url.path == "/v1/orders/x/contact":
            return httpx.Response(404, json={})
        return httpx.Response(200, json={"redacted": False, **FULL, "name": "Bo"})

    contacts = lingering(handler)
    o, p, x = await asyncio.gather(
        contacts.fetch("o"), contacts.fetch("p"), contacts.fetch("x"), return_exceptions=True
    )
    assert isinstance(o, ShipTo) and o.name == "Ada"
    assert isinstance(p, ShipTo) and (p.name, p.line1) == ("Bo", "1 Main")  # read alone
    assert isinstance(x, ShipToUnavailable)  # alone, as without a linger: tried again later
    assert seen[0] == ("POST", "/v1/contacts:lookup")
    assert ("GET", "/v1/orders/p/contact") in seen and ("GET", "/v1/orders/o/contact") not in seen


@pytest.mark.parametrize("failure", ["refused", 500, 422, "not json"])
async def test_a_failed_lookup_asks_for_each_order_alone(failure):
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        if request.method == "POST":
            if failure == "refused":
                raise httpx.ConnectError("refused")
            if failure == "not json":
                return httpx.Response(200, content=b"<html>")
            return httpx.Response(failure, json={})
        return httpx.Response(200, json={"redacted": False, **FULL})

    contacts = lingering(handler)
    found = await asyncio.gather(contacts.fetch("o"), contacts.fetch("p"))
    assert all(isinstance(f, ShipTo) and f.to_json() == FULL for f in found)
    assert sorted(seen[1:]) == [("GET", "/v1/orders/o/contact"), ("GET", "/v1/orders/p/contact")]


async def test_a_lone_order_in_a_linger_is_asked_for_alone():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path))
        return httpx.Response(200, json={"redacted": False, **FULL})

    assert isinstance(await lingering(handler).fetch("o"), ShipTo)
    assert seen == [("GET", "/v1/orders/o/contact")]
