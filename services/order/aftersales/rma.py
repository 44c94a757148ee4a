"""Asking the supplier for an RMA, through the supplier service (`POST /v1/suppliers/{id}/rma`).

The supplier service holds the suppliers' sealed credentials and speaks their API; the
order service calls it with the service token, the way the supplier service reads a
ship-to from us. The request is idempotent on the return id end to end (our call, and the
supplier service's `Idempotency-Key` to the supplier), so asking twice never creates a
second RMA with another number.

    ask(RmaAsk) -> RmaGranted(rma, return_address)
                -> RmaRefused(reason)            the supplier will not take the goods back
                raises RmaUnavailable            no usable answer in time: ask again later
                raises InvalidAfterSales         the supplier service knows no such supplier

Transport errors and 5xx other than 503 (the supplier service restarting) are retried
with jittered backoff for up to `retry_for_s`; a 503 means the supplier service already
retried the supplier itself, so it is passed on at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential_jitter,
)

from services.order.aftersales.domain import ReturnedLine
from services.order.aftersales.errors import InvalidAfterSales, RmaUnavailable
from shared.events import ReturnReason


@dataclass(frozen=True)
class RmaAsk:
    return_id: str
    order_id: str
    supplier_id: str
    reason: ReturnReason
    lines: tuple[ReturnedLine, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "return_id": self.return_id,
            "order_id": self.order_id,
            "reason": self.reason.value,
            "lines": [
                {"line_id": ln.line_id, "sku": ln.sku, "quantity": ln.quantity} for ln in self.lines
            ],
        }


@dataclass(frozen=True)
class RmaGranted:
    rma: str
    return_address: str


@dataclass(frozen=True)
class RmaRefused:
    reason: str


RmaAnswer = RmaGranted | RmaRefused


class RmaDesk(Protocol):
    """Where RMAs are asked for (the supplier service; a fake in unit tests)."""

    async def ask(self, request: RmaAsk) -> RmaAnswer: ...


class _Retry(Exception):
    """A transient answer worth asking again."""


class SupplierRmaClient:
    """Speaks the supplier service's RMA endpoint; one instance per app."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout_s: float = 15.0,
        retry_for_s: float = 3.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self.retry_for_s = retry_for_s
        self.transport = transport

    async def ask(self, request: RmaAsk) -> RmaAnswer:
        url = f"{self.base_url}/v1/suppliers/{quote(request.supplier_id, safe='')}/rma"
        async with httpx.AsyncClient(transport=self.transport, timeout=self.timeout_s) as http:
            try:
                async for attempt in AsyncRetrying(
                    retry=retry_if_exception_type(_Retry),
                    wait=wait_exponential_jitter(multiplier=0.2, max=1.0),
                    stop=stop_after_delay(self.retry_for_s),
                    reraise=True,
                ):
                    with attempt:
                        return await self._once(http, url, request)
            except _Retry as exc:
                raise RmaUnavailable(str(exc)) from None
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    async def _once(self, http: httpx.AsyncClient, url: str, request: RmaAsk) -> RmaAnswer:
        try:
            response = await http.post(
                url, json=request.to_json(), headers={"Authorization": f"Bearer {self.token}"}
            )
        except httpx.TimeoutException:
            raise RmaUnavailable("the supplier service did not answer in time") from None
        except httpx.TransportError as exc:
            raise _Retry(f"supplier service unreachable ({type(exc).__name__})") from None
        if response.status_code == 503:
            raise RmaUnavailable(_reason(response) or "the supplier is unavailable")
        if response.status_code >= 500:
            raise _Retry(f"supplier service answered {response.status_code}")
        if response.status_code == 404:  # asking again will not help
            raise InvalidAfterSales(
                [("supplier_id", f"{request.supplier_id} is not a supplier the supplier "
                  "service knows: reject the return or handle it by hand")]
            )  # fmt: skip
        if response.status_code != 200:
            raise RmaUnavailable(
                f"supplier service answered {response.status_code}: {_reason(response)}"
            )
        body = _json(response)
        if body.get("status") == "granted":
            rma, address = body.get("rma"), body.get("return_address")
            if isinstance(rma, str) and rma and isinstance(address, str) and address:
                return RmaGranted(rma[:128], address[:500])
        if body.get("status") == "refused":
            return RmaRefused(str(body.get("reason") or "refused by the supplier")[:1000])
        raise RmaUnavailable("the supplier service answered no usable RMA")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _reason(response: httpx.Response) -> str:
    error = _json(response).get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "")[:300]
    return ""
