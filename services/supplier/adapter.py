"""HTTP adapter for the supplier API (docs/supplier-api.md): retries, breaker, rate limit.

Outcomes are returned, never raised, because routing fails over on them::

    Outcome                             (each carries attempts = HTTP requests made)
     +-- Received(supplier_order_ref)   202: taken; decisions arrive as callbacks
     +-- OutOfStock(skus)               409 out_of_stock: fail over, not retried
     +-- Rejected(reason)               422 (or another 409): fail over, not retried
     +-- SupplierStatus(status, ...)    200 to GET /orders/{ref}: what became of an order
     +-- RmaGranted(rma, return_address) 201 to POST /returns: send the goods back there
     +-- Unavailable(reason)            no usable answer; reason starts with "timeout" |
           "http 5xx" | "http 429" | "breaker open" (attempts may be 0) | "transport
           error" | "bad destination" (an internal address the egress guard refused:
           shared.egress) | "bad credentials" (401/403) | "http 4xx" (other) | "bad response"

Nothing but programming errors (and ``asyncio.CancelledError``) escapes.

Retries (tenacity, exponential backoff with jitter) only on ``httpx.TransportError``
(timeouts included), 5xx and 429, at most ``max_attempts`` requests, all with the same
``Idempotency-Key`` so the supplier never creates a second order. A ``Retry-After`` in
seconds is waited out when at most ``backoff_max_s``; a longer one ends the retries so
the caller fails over instead of sleeping. The per-supplier breaker is asked before
every attempt (open: no request) and told its outcome: 5xx/429/transport/401/403/other
4xx are failures, 2xx/409/422 successes (the supplier answered sanely).

Every attempt, retries included, first takes a slot from the supplier's
``AsyncLimiter(1, 1 / rate_per_s)``; ``AsyncLimiter(rate_per_s, 1)`` would allow a burst
of ``rate_per_s`` on top of the drip, nearly twice the rate in one sliding second.
Request bodies (they carry the customer's whole ship-to address) are never logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import quote

import httpx
from aiolimiter import AsyncLimiter
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, wait_exponential_jitter

from services.supplier.breaker import CircuitBreaker
from shared.egress import is_refusal

logger = logging.getLogger(__name__)
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SupplierEndpoint:
    supplier_id: str
    base_url: str
    api_key: str
    rate_per_s: float | None = None


@dataclass(frozen=True, slots=True)
class OrderLine:
    supplier_sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class PlaceOrderRequest:
    idempotency_key: str  # our supplier order id; the same on every retry
    reference: str
    order_id: str
    lines: list[OrderLine]
    ship_country: str
    ship_postal_code: str
    callback_url: str
    ship_to: dict[str, str | None] | None = field(default=None, repr=False)
    """The full destination, read from the order service for this call; never logged."""

    def to_json(self) -> dict[str, Any]:
        ship_to = self.ship_to or {
            "country": self.ship_country,
            "postal_code": self.ship_postal_code,
        }
        return {
            "reference": self.reference,
            "order_id": self.order_id,
            "lines": [asdict(line) for line in self.lines],
            "ship_to": ship_to,
            "callback_url": self.callback_url,
        }


@dataclass(frozen=True, slots=True)
class Received:
    supplier_order_ref: str
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class OutOfStock:
    skus: list[str]
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class Unavailable:
    reason: str
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class SupplierStatus:
    """The supplier's own view of an order (`GET /orders/{ref}`)."""

    supplier_order_ref: str
    status: str  # received | accepted | rejected | backordered | dispatched | delivered | cancelled
    reason: str | None = None
    carrier: str | None = None
    tracking_number: str | None = None
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class RmaGranted:
    """The supplier authorised a return: its RMA number and where the goods go."""

    rma: str
    return_address: str
    attempts: int = 1


@dataclass(frozen=True, slots=True)
class ReturnRequest:
    """`POST /returns`: an RMA for goods the supplier shipped; keyed by our return id."""

    return_id: str  # the Idempotency-Key, the same on every retry (and every re-ask)
    order_id: str
    supplier_order_ref: str | None
    reason: str
    lines: list[OrderLine]

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.return_id,
            "order_id": self.order_id,
            "supplier_order_ref": self.supplier_order_ref,
            "reason": self.reason,
            "lines": [asdict(line) for line in self.lines],
        }


Outcome = Received | OutOfStock | Rejected | Unavailable | SupplierStatus | RmaGranted


@dataclass(frozen=True, slots=True)
class _Transient:
    """An attempt worth retrying: the reason and the supplier's Retry-After, if any."""

    reason: str
    retry_after_s: float | None = None


class SupplierClient:
    """Speaks docs/supplier-api.md to any supplier; one instance per service."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        breaker: CircuitBreaker,
        *,
        timeout_s: float = 5.0,
        max_attempts: int = 4,
        backoff_initial_s: float = 0.2,
        backoff_max_s: float = 3.0,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_max_s = backoff_max_s
        self._http = http
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(
            multiplier=backoff_initial_s, max=backoff_max_s, jitter=backoff_initial_s
        )
        self._limiters: dict[str, AsyncLimiter | None] = {}

    async def place_order(self, endpoint: SupplierEndpoint, request: PlaceOrderRequest) -> Outcome:
        """POST /orders; the same Idempotency-Key on every attempt."""
        url = f"{endpoint.base_url.rstrip('/')}/orders"
        body = request.to_json()
        skus = [line.supplier_sku for line in request.lines]

        def interpret(resp: httpx.Response) -> Outcome:
            data = _json(resp)
            if resp.status_code in (200, 201, 202):
                ref = data.get("supplier_order_ref")
                if isinstance(ref, str) and ref:
                    return Received(ref)
                return Unavailable("bad response: no supplier_order_ref")
            if resp.status_code == 409 and data.get("error") == "out_of_stock":
                named = data.get("skus")
                if isinstance(named, list) and named and all(isinstance(s, str) for s in named):
                    return OutOfStock([str(s) for s in named])
                return OutOfStock(skus)
            if resp.status_code == 409:
                return Rejected(f"conflict: {data.get('error') or 'http 409'}")
            return Rejected(str(data.get("reason") or "rejected"))

        outcome = await self._call(endpoint, url, body, request.idempotency_key, interpret)
        logger.info(
            "supplier place_order: %s after %d attempt(s)",
            type(outcome).__name__,
            outcome.attempts,
            extra={"supplier_id": endpoint.supplier_id, "order_id": request.order_id},
        )
        return outcome

    async def cancel_order(self, endpoint: SupplierEndpoint, supplier_order_ref: str) -> bool:
        """POST /orders/{ref}/cancel; True once cancelled, False if dispatched or unreachable."""
        url = f"{endpoint.base_url.rstrip('/')}/orders/{quote(supplier_order_ref, safe='')}/cancel"

        def interpret(resp: httpx.Response) -> Outcome:
            if resp.status_code == 409:
                return Rejected("already dispatched")
            if resp.status_code == 422:
                return Rejected(str(_json(resp).get("reason") or "rejected"))
            return Received(supplier_order_ref)

        outcome = await self._call(endpoint, url, {}, f"cancel-{supplier_order_ref}", interpret)
        logger.info(
            "supplier cancel_order: %s",
            getattr(outcome, "reason", "cancelled"),
            extra={"supplier_id": endpoint.supplier_id, "supplier_order_ref": supplier_order_ref},
        )
        return isinstance(outcome, Received)

    async def order_status(self, endpoint: SupplierEndpoint, supplier_order_ref: str) -> Outcome:
        """GET /orders/{ref}: a `SupplierStatus`, or `Unavailable` (ask again later)."""
        url = f"{endpoint.base_url.rstrip('/')}/orders/{quote(supplier_order_ref, safe='')}"

        def interpret(resp: httpx.Response) -> Outcome:
            data = _json(resp)
            status = data.get("status")
            if resp.status_code != 200 or not isinstance(status, str):
                return Unavailable("bad response: no status")

            def text(name: str) -> str | None:
                value = data.get(name)
                return str(value)[:200] if isinstance(value, str) and value else None

            return SupplierStatus(
                supplier_order_ref, status, text("reason"), text("carrier"), text("tracking_number")
            )

        return await self._call(
            endpoint, url, None, f"status-{supplier_order_ref}", interpret, method="GET"
        )

    async def request_return(self, endpoint: SupplierEndpoint, request: ReturnRequest) -> Outcome:
        """POST /returns: `RmaGranted`, `Rejected(reason)` (refused) or `Unavailable`."""
        url = f"{endpoint.base_url.rstrip('/')}/returns"

        def interpret(resp: httpx.Response) -> Outcome:
            data = _json(resp)
            if resp.status_code in (200, 201, 202):
                rma, address = data.get("rma"), data.get("return_address")
                if isinstance(rma, str) and rma and isinstance(address, str) and address:
                    return RmaGranted(rma[:128], address[:500])
                return Unavailable("bad response: no rma or return_address")
            if resp.status_code == 409:
                return Unavailable(f"conflict: {data.get('error') or 'http 409'}")
            return Rejected(str(data.get("reason") or "refused")[:1000])

        outcome = await self._call(endpoint, url, request.to_json(), request.return_id, interpret)
        logger.info(
            "supplier request_return: %s after %d attempt(s)",
            type(outcome).__name__,
            outcome.attempts,
            extra={"supplier_id": endpoint.supplier_id, "order_id": request.order_id},
        )
        return outcome

    async def _call(
        self,
        endpoint: SupplierEndpoint,
        url: str,
        body: dict[str, Any] | None,
        idempotency_key: str,
        interpret: Callable[[httpx.Response], Outcome],
        *,
        method: str = "POST",
    ) -> Outcome:
        supplier = endpoint.supplier_id
        headers = {
            "Authorization": f"Bearer {endpoint.api_key}",
            "Idempotency-Key": idempotency_key,
            "Content-Type": "application/json",
        }
        attempts = 0

        async def attempt() -> Outcome | _Transient:
            nonlocal attempts
            if not self.breaker.allow(supplier):
                return Unavailable("breaker open", attempts=attempts)
            limiter = self._limiter(endpoint)
            if limiter is not None:
                await limiter.acquire()
            attempts += 1
            result = await self._send(method, url, headers, body, interpret)
            self.breaker.record(supplier, success=not isinstance(result, _Transient | Unavailable))
            if isinstance(result, _Transient):
                logger.warning(
                    "supplier attempt %d failed: %s",
                    attempts,
                    result.reason,
                    extra={"supplier_id": supplier, "attempt": attempts},
                )
            return result

        retrying = AsyncRetrying(
            sleep=self._sleep,
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_result(lambda r: isinstance(r, _Transient)),
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
        )
        result: Outcome | _Transient = await retrying(attempt)
        if isinstance(result, _Transient):
            return Unavailable(result.reason, attempts=attempts)
        return replace(result, attempts=attempts)

    async def _send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: dict[str, Any] | None,
        interpret: Callable[[httpx.Response], Outcome],
    ) -> Outcome | _Transient:
        try:
            async with asyncio.timeout(self.timeout_s):
                resp = await self._http.request(
                    method, url, json=body, headers=headers, timeout=self.timeout_s
                )
        except (httpx.TimeoutException, TimeoutError):
            return _Transient("timeout")
        except httpx.TransportError as exc:
            if is_refusal(exc):  # an internal address in production: retrying cannot help
                return Unavailable(f"bad destination ({exc})")
            return _Transient(f"transport error: {type(exc).__name__}")
        status = resp.status_code
        if status == 429 or status >= 500:
            return _Transient(f"http {status}", _retry_after_s(resp))
        if status in (401, 403):
            return Unavailable(f"bad credentials (http {status})")
        if status in (200, 201, 202, 409, 422):
            return interpret(resp)
        return Unavailable(f"http {status}")

    def _limiter(self, endpoint: SupplierEndpoint) -> AsyncLimiter | None:
        supplier = endpoint.supplier_id
        if supplier not in self._limiters:
            rate = endpoint.rate_per_s
            self._limiters[supplier] = AsyncLimiter(1, 1 / rate) if rate and rate > 0 else None
        return self._limiters[supplier]

    def _stop(self, state: RetryCallState) -> bool:
        after = _last_retry_after(state)
        too_long = after is not None and after > self.backoff_max_s
        return state.attempt_number >= self.max_attempts or too_long

    def _wait(self, state: RetryCallState) -> float:
        backoff, after = float(self._backoff(state)), _last_retry_after(state)
        return backoff if after is None else max(backoff, after)


def _json(resp: httpx.Response) -> dict[str, Any]:
    try:
        data = resp.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _retry_after_s(resp: httpx.Response) -> float | None:
    """Retry-After in delta-seconds; an HTTP date or garbage means plain backoff."""
    value = resp.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


def _last_retry_after(state: RetryCallState) -> float | None:
    last = state.outcome.result() if state.outcome and not state.outcome.failed else None
    return last.retry_after_s if isinstance(last, _Transient) else None
