"""The ship-to client: tolerant of what the order service serves, never showing an address."""

from __future__ import annotations

import asyncio

import httpx
import pytest

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
