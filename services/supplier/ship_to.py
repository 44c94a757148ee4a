"""The destination of an order, read from the order service when a supplier is called.

The supplier service never stores, logs or publishes a customer's address: the
dispatcher asks the order service (`GET /v1/orders/{id}/contact`, service token) just
before it places a supplier order, and the answer lives in memory for that one call
(the supplier orders of one order placed at the same moment share one lookup in flight).
Every field's `repr` is hidden so no log line or traceback can carry it.

With a `linger`, the orders whose destinations are asked for within it of the first are
read in one request (`POST /v1/contacts:lookup` with `ship_to`, up to 100 orders; the
grouping is `shared.group_commit.GroupCommit`'s). An order that request does not answer
(the request failed, an order service that does not know `ship_to` yet, an unknown order)
is asked for alone, as without a linger.

    fetch(order_id) -> ShipTo         the destination (fields the order service does not
                                      know yet are None; the supplier judges completeness)
                    -> Redacted       the customer was erased: the order cannot be sent
                    raises ShipToUnavailable   the order service is unreachable or errs:
                                      the call is made again later (the job's lease expires)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client import Counter
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from shared.group_commit import GroupCommit

FIELDS = ("name", "phone", "email", "line1", "line2", "city", "region", "postal_code", "country")
LOOKUP_MAX = 100
"""Orders one `POST /v1/contacts:lookup` may ask about (the order service's limit)."""
LOOKUPS = Counter(
    "dropship_supplier_ship_to_requests",
    "HTTP requests the supplier service made to the order service for destinations "
    "(single: one order's contact; batch: a lookup of orders placed together).",
    ["endpoint"],
)
Key = tuple[str, str | None, str | None]
"""An order id, and the country and postal code its routing knew (the fallback)."""


log = logging.getLogger(__name__)


class ShipToUnavailable(Exception):
    """The order service did not answer usefully; try again later."""


@dataclass(frozen=True)
class Redacted:
    """The customer's details were erased: nothing can be shipped to them."""


@dataclass(frozen=True)
class ShipTo:
    name: str | None = field(default=None, repr=False)
    phone: str | None = field(default=None, repr=False)
    email: str | None = field(default=None, repr=False)
    line1: str | None = field(default=None, repr=False)
    line2: str | None = field(default=None, repr=False)
    city: str | None = field(default=None, repr=False)
    region: str | None = field(default=None, repr=False)
    postal_code: str | None = field(default=None, repr=False)
    country: str | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, str | None]:
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def read(cls, body: dict[str, Any], *, fallback: dict[str, str | None]) -> ShipTo:
        """From the contact answer (flat, or nested under `ship_to`), tolerant of fields the
        order service does not serve yet; `fallback` fills gaps (country, postal code)."""
        nested = body.get("ship_to")
        source = nested if isinstance(nested, dict) else body
        values: dict[str, str | None] = {}
        for name in FIELDS:
            value = source.get(name) or body.get(name)
            values[name] = value if isinstance(value, str) and value.strip() else None
            if values[name] is None:
                values[name] = fallback.get(name)
        return cls(**values)


class ShipToBook:
    """Reads destinations from the order service; one instance per service.

    Concurrent fetches of the same order share one lookup (an order split between two
    suppliers is placed with both at once); it is forgotten as soon as it is answered.
    """

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        token: str,
        *,
        retry_for_s: float = 15.0,
        linger_s: float = 0.0,
    ) -> None:
        """`linger_s`: destinations asked for within it of the first are read together."""
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.retry_for_s = retry_for_s
        self._retrying = AsyncRetrying(  # built once; each fetch runs a copy
            retry=retry_if_exception_type(ShipToUnavailable),
            wait=wait_exponential_jitter(multiplier=0.2, max=2.0),
            stop=stop_after_delay(retry_for_s),
            reraise=True,
        )
        self._in_flight: dict[Key, asyncio.Task[ShipTo | Redacted]] = {}
        self._together: GroupCommit[Key, ShipTo | Redacted | None] = GroupCommit(
            self._lookup, _not_together, linger_s=linger_s, max_group=LOOKUP_MAX, name="ship_to"
        )

    async def fetch(
        self, order_id: str, *, country: str | None = None, postal_code: str | None = None
    ) -> ShipTo | Redacted:
        """The order's destination; a brief order-service outage (a restart) is waited out.

        Retries for up to `retry_for_s`; past that, `ShipToUnavailable` and the job's lease
        brings it back later.
        """
        key = (order_id, country, postal_code)
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(order_id, country, postal_code))
            self._in_flight[key] = task
            task.add_done_callback(lambda done: self._settled(key, done))
        return await asyncio.shield(task)  # one caller cancelled: the others still get it

    def _settled(self, key: Key, task: asyncio.Task[ShipTo | Redacted]) -> None:
        if self._in_flight.get(key) is task:
            del self._in_flight[key]
        if not task.cancelled():
            task.exception()  # retrieved here too: every caller may have been cancelled

    async def _fetch(
        self, order_id: str, country: str | None, postal_code: str | None
    ) -> ShipTo | Redacted:
        found = await self._together.submit((order_id, country, postal_code))
        return found if found is not None else await self._alone(order_id, country, postal_code)

    async def _lookup(self, keys: Sequence[Key]) -> list[ShipTo | Redacted | None] | None:
        """Destinations of orders placed together, in one request; None for an order it did
        not answer (each then asked for alone, with its retries), all None if it failed."""
        url = f"{self.base_url}/v1/contacts:lookup"
        asked = {"order_ids": list(dict.fromkeys(k[0] for k in keys)), "ship_to": True}
        LOOKUPS.labels("batch").inc()
        try:
            response = await self.http.post(url, json=asked, headers=self._headers())
            body = response.json() if response.status_code == 200 else {}
            items = body.get("items") if isinstance(body, dict) else None
        except (httpx.HTTPError, ValueError):
            items = None
        if not isinstance(items, list):
            log.info("destinations looked up one by one", extra={"orders": len(keys)})
            return None
        answered = {  # an order service that does not know `ship_to` yet leaves it out
            item.get("order_id"): item
            for item in items
            if isinstance(item, dict) and "ship_to" in item
        }
        return [
            None if (item := answered.get(order_id)) is None else _read(item, country, postal)
            for order_id, country, postal in keys
        ]

    async def _alone(
        self, order_id: str, country: str | None, postal_code: str | None
    ) -> ShipTo | Redacted:
        async for attempt in self._retrying.copy():
            with attempt:
                return await self._fetch_once(order_id, country=country, postal_code=postal_code)
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    async def _fetch_once(
        self, order_id: str, *, country: str | None, postal_code: str | None
    ) -> ShipTo | Redacted:
        url = f"{self.base_url}/v1/orders/{quote(order_id, safe='')}/contact"
        LOOKUPS.labels("single").inc()
        try:
            response = await self.http.get(url, headers=self._headers())
        except httpx.HTTPError as exc:
            raise ShipToUnavailable(f"order service unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise ShipToUnavailable(f"contact lookup answered {response.status_code}")
        try:
            body = response.json()
        except ValueError as exc:
            raise ShipToUnavailable("contact lookup answered no JSON") from exc
        if not isinstance(body, dict):
            raise ShipToUnavailable("contact lookup answered no object")
        return _read(body, country, postal_code)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def _read(body: dict[str, Any], country: str | None, postal_code: str | None) -> ShipTo | Redacted:
    """An order's contact answer (alone, or an item of a lookup) as its destination."""
    if body.get("redacted"):
        return Redacted()
    return ShipTo.read(body, fallback={"country": country, "postal_code": postal_code})


async def _not_together(_: Key) -> None:
    """A lone order in a linger: asked for alone (None: not answered together)."""
    return None
