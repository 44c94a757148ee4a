"""Customer contact details, read from the order service at send time and never stored.

PII does not travel in events, so the notify service asks the order service just before
it sends: one `POST /v1/contacts:lookup` (service token) for every order of a claimed
batch of sends (`ContactBatch`), or `GET /v1/orders/{id}/contact` per order when the order
service is older and has no batch lookup. The details live in memory for the duration of
one batch; their `repr` hides them so no log line or traceback can carry them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client import Counter
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from services.notify.channels import PermanentSendError, TransientSendError

log = logging.getLogger(__name__)

LOOKUP_MAX = 100
"""Order ids the order service answers per `POST /v1/contacts:lookup`."""
BATCH_RETRY_S = 300.0
"""After the order service answered 404/405 to a batch lookup, ask it again this much later."""

REQUESTS = Counter(
    "dropship_notify_contact_requests_total",
    "HTTP requests notify made to the order service for customer contacts.",
    ["endpoint"],
)


@dataclass(frozen=True)
class Contact:
    name: str | None = field(repr=False)
    email: str | None = field(repr=False)
    phone: str | None = field(repr=False)
    locale: str | None
    redacted: bool


class OrderUnknown(PermanentSendError):
    pass


class _Retryable(Exception):
    pass


class _NoBatch(Exception):
    """The order service cannot answer this batch lookup: ask for each order on its own."""


def _contact(body: dict[str, Any]) -> Contact:
    return Contact(
        name=body.get("name"),
        email=body.get("email"),
        phone=body.get("phone"),
        locale=body.get("locale"),
        redacted=bool(body.get("redacted")),
    )


class ContactBook:
    """The order service's contact endpoints, with one retry policy built for all lookups."""

    def __init__(
        self, http: httpx.AsyncClient, base_url: str, token: str, *, attempts: int = 3
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.attempts = attempts
        self._headers = {"Authorization": f"Bearer {token}"}
        self._batch_off_until = 0.0  # monotonic; > now while the order service has no batch path
        self._told_no_batch = False
        # the retry policy is built once; each lookup runs a copy (tenacity's own per-call way)
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )

    async def _call(self, endpoint: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """The answer, retried on network errors, 5xx and 429; `TransientSendError` after."""
        try:
            async for attempt in self._retrying.copy():
                with attempt:
                    REQUESTS.labels(endpoint).inc()
                    try:
                        response = await self.http.request(
                            method, url, headers=self._headers, **kwargs
                        )
                    except httpx.HTTPError as exc:
                        raise _Retryable(
                            f"order service unreachable: {type(exc).__name__}"
                        ) from exc
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _Retryable(f"order service answered {response.status_code}")
        except _Retryable as exc:
            raise TransientSendError(str(exc)) from exc
        return response

    async def fetch(self, order_id: str) -> Contact:
        """The order's contact; `TransientSendError` while the order service is unreachable."""
        url = f"{self.base_url}/v1/orders/{quote(order_id, safe='')}/contact"
        response = await self._call("single", "GET", url)
        if response.status_code == 404:
            raise OrderUnknown(f"order {order_id} is unknown to the order service")
        if response.status_code != 200:
            # 401/403: our token is wrong; fixing the configuration and retrying helps
            raise TransientSendError(f"contact lookup answered {response.status_code}")
        return _contact(response.json())

    async def fetch_many(self, order_ids: list[str]) -> dict[str, Contact]:
        """The contacts of those of `order_ids` the order service knows, one request per
        `LOOKUP_MAX` ids; `TransientSendError` while it is unreachable, `_NoBatch` when it
        cannot answer a batch (an older version: 404/405)."""
        if time.monotonic() < self._batch_off_until:
            raise _NoBatch()
        found: dict[str, Contact] = {}
        for start in range(0, len(order_ids), LOOKUP_MAX):
            chunk = order_ids[start : start + LOOKUP_MAX]
            found.update(await self._lookup(chunk))
        return found

    async def _lookup(self, order_ids: list[str]) -> dict[str, Contact]:
        url = f"{self.base_url}/v1/contacts:lookup"
        response = await self._call("batch", "POST", url, json={"order_ids": order_ids})
        if response.status_code in (404, 405):
            self._batch_off_until = time.monotonic() + BATCH_RETRY_S
            if not self._told_no_batch:
                self._told_no_batch = True
                log.warning(
                    "the order service has no batch contact lookup: one lookup per order",
                    extra={"status": response.status_code},
                )
            raise _NoBatch()
        if response.status_code == 422:  # an id it finds malformed: each on its own says 404
            raise _NoBatch()
        if response.status_code != 200:
            raise TransientSendError(f"contact lookup answered {response.status_code}")
        return {item["order_id"]: _contact(item) for item in response.json()["items"]}


class ContactBatch:
    """The contacts of one claimed batch of sends, looked up together when first needed.

    The whole lookup failing fails every send that needs it (each retries as before); an
    order the order service does not know fails only its own sends (`OrderUnknown`).
    """

    def __init__(self, book: ContactBook, order_ids: Iterable[str]) -> None:
        self.book = book
        self.order_ids = list(dict.fromkeys(order_ids))
        self._asked = frozenset(self.order_ids)
        self._lock = asyncio.Lock()
        self._found: dict[str, Contact] | None = None
        self._failure: str | None = None
        self._one_by_one = False

    async def get(self, order_id: str) -> Contact:
        if order_id not in self._asked:
            return await self.book.fetch(order_id)
        async with self._lock:  # the first caller looks up; the others wait for its answer
            if self._found is None and self._failure is None and not self._one_by_one:
                try:
                    self._found = await self.book.fetch_many(self.order_ids)
                except _NoBatch:
                    self._one_by_one = True
                except TransientSendError as exc:
                    self._failure = str(exc)
        if self._one_by_one:
            return await self.book.fetch(order_id)
        if self._failure is not None:
            raise TransientSendError(self._failure)
        assert self._found is not None
        contact = self._found.get(order_id)
        if contact is None:
            raise OrderUnknown(f"order {order_id} is unknown to the order service")
        return contact
