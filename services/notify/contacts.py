"""Customer contact details, read from the order service at send time and never stored.

PII does not travel in events, so the notify service asks the order service
(`GET /v1/orders/{id}/contact`, service token) just before it sends. The details live
in memory for the duration of one send; their `repr` hides them so no log line or
traceback can carry them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from services.notify.channels import PermanentSendError, TransientSendError


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


class ContactBook:
    def __init__(
        self, http: httpx.AsyncClient, base_url: str, token: str, *, attempts: int = 3
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.attempts = attempts
        # the retry policy is built once; each lookup runs a copy (tenacity's own per-call way)
        self._retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )

    async def fetch(self, order_id: str) -> Contact:
        """The order's contact; `TransientSendError` while the order service is unreachable."""
        url = f"{self.base_url}/v1/orders/{quote(order_id, safe='')}/contact"
        headers = {"Authorization": f"Bearer {self.token}"}
        try:
            async for attempt in self._retrying.copy():
                with attempt:
                    try:
                        response = await self.http.get(url, headers=headers)
                    except httpx.HTTPError as exc:
                        raise _Retryable(
                            f"order service unreachable: {type(exc).__name__}"
                        ) from exc
                    if response.status_code >= 500 or response.status_code == 429:
                        raise _Retryable(f"order service answered {response.status_code}")
        except _Retryable as exc:
            raise TransientSendError(str(exc)) from exc
        if response.status_code == 404:
            raise OrderUnknown(f"order {order_id} is unknown to the order service")
        if response.status_code != 200:
            # 401/403: our token is wrong; fixing the configuration and retrying helps
            raise TransientSendError(f"contact lookup answered {response.status_code}")
        body = response.json()
        return Contact(
            name=body.get("name"),
            email=body.get("email"),
            phone=body.get("phone"),
            locale=body.get("locale"),
            redacted=bool(body.get("redacted")),
        )
