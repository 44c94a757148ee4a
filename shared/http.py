"""HTTP plumbing every service shares: the JSON error shape, auth dependencies, trace context."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import Counter
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import tracing
from shared.failures import is_infrastructure_failure

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with an HTTP status and a stable machine-readable code."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class Unprocessable(ApiError):
    status_code = 422
    code = "validation_error"


class ServiceUnavailable(ApiError):
    status_code = 503
    code = "unavailable"


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """Every error: `{"error": {"code", "message", "details"}}`."""

    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "Malformed request"),
        (401, "Missing or invalid credentials"),
        (404, "Not found"),
        (409, "Conflict with the current state"),
        (422, "Invalid input: `details` lists each field and reason"),
    )
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    """Pydantic errors as `[{"field": "body.lines.0.quantity", "reason": "..."}]`."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        ctx = err.get("ctx") or {}
        if "field" in ctx:  # a model-level rule that names the field it is about
            loc.append(str(ctx["field"]))
        out.append({"field": ".".join(loc), "reason": str(err.get("msg", "invalid"))})
    return out


@dataclass(frozen=True)
class ErrorMapping:
    """How one domain error reads over HTTP: its status and stable machine code."""

    status: int
    code: str
    headers: Mapping[str, str] | None = None


def install_domain_errors(app: FastAPI, table: Mapping[type[Exception], ErrorMapping]) -> None:
    """Map a service's domain errors to the error shape, once, for every route.

    Routes let domain errors propagate; the most specific class in `table` wins (the
    error's MRO is walked). The message is `str(exc)`; `exc.details`, when the error has
    one, becomes `details`. A domain error never needs an `except` in a route.
    """

    def lookup(exc: Exception) -> ErrorMapping | None:
        for cls in type(exc).__mro__:
            if cls in table:
                return table[cls]
        return None

    async def _domain_error(_: Request, exc: Exception) -> JSONResponse:
        mapping = lookup(exc)
        if mapping is None:  # pragma: no cover - registered only for mapped classes
            raise exc
        details = getattr(exc, "details", None)
        return JSONResponse(
            error_body(mapping.code, str(exc), details),
            status_code=mapping.status,
            headers=dict(mapping.headers) if mapping.headers else None,
        )

    for cls in table:
        app.add_exception_handler(cls, _domain_error)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.details), status_code=exc.status_code
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = field_errors(exc)
        first = details[0] if details else {"field": "request", "reason": "invalid"}
        message = f"{first['field']}: {first['reason']}"
        return JSONResponse(error_body("validation_error", message, details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {
            401: "unauthorized",
            404: "not_found",
            405: "method_not_allowed",
            413: "payload_too_large",
            429: "rate_limited",
        }
        return JSONResponse(
            error_body(codes.get(exc.status_code, "http_error"), str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(_: Request, exc: PoolTimeout) -> JSONResponse:
        SHED.inc()
        log.warning("no database connection in time: answered 503")
        return JSONResponse(
            error_body("overloaded", "no database connection free; retry after Retry-After"),
            status_code=503,
            headers={"Retry-After": "1"},
        )

    async def _infrastructure(_: Request, exc: Exception) -> JSONResponse:
        if not is_infrastructure_failure(exc):
            raise exc
        log.warning("database or network unavailable: answered 503", extra={"error": repr(exc)})
        return JSONResponse(
            error_body("unavailable", "a dependency is unavailable; retry after Retry-After"),
            status_code=503,
            headers={"Retry-After": "1"},
        )

    for outage in (DBAPIError, DisconnectionError, OSError):
        app.add_exception_handler(outage, _infrastructure)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(error_body("internal", "internal error"), status_code=500)


class TraceMiddleware:
    """A server span per request, continuing the caller's W3C trace (or starting one).

    Everything the request emits carries the span's context. Plain ASGI (not
    `BaseHTTPMiddleware`), so it costs one header scan per request; probes and
    `/metrics` are not traced.
    """

    UNTRACED = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(self, app: ASGIApp, tracer: tracing.Tracing | None = None) -> None:
        self.app = app
        self.tracer = tracer or tracing.DISABLED

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.UNTRACED:
            await self.app(scope, receive, send)
            return
        incoming = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"traceparent"), None
        )
        method = scope["method"]
        with self.tracer.span(
            method,
            SpanKind.SERVER,
            incoming,
            {"http.request.method": method, "url.path": scope["path"]},
        ) as span:
            if not span.is_recording():
                await self.app(scope, receive, send)
                return

            async def send_recording_status(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(StatusCode.ERROR)
                await send(message)

            try:
                await self.app(scope, receive, send_recording_status)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route:
                    span.set_attribute("http.route", route)
                    span.update_name(f"{method} {route}")


def install_trace_middleware(app: FastAPI, tracer: tracing.Tracing | None = None) -> None:
    app.add_middleware(TraceMiddleware, tracer=tracer)


SHED = Counter(
    "dropship_http_requests_shed_total",
    "Requests answered 503 + Retry-After because too many were in flight.",
)
REQUESTS = Counter(
    "dropship_http_requests_total",
    "HTTP requests received, probes and /metrics excepted (the cost model's HTTP calls).",
)


class LoadShedMiddleware:
    """Admission control: at most `max_inflight` requests at once, the rest answered fast.

    Past capacity a service that queues every request only gets slower until clients
    time out, and timed-out clients retry into the same queue. Instead a request that
    cannot get a slot within `wait_s` is answered `503` with `Retry-After` at once, and
    changes nothing, so well-behaved clients back off and the service keeps its latency
    for the requests it does take; it recovers as soon as the load drops. Probes and
    `/metrics` are never shed (an overloaded service is still alive).
    """

    EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})

    def __init__(
        self, app: ASGIApp, max_inflight: int = 256, wait_s: float = 0.25, retry_after_s: int = 1
    ) -> None:
        self.app = app
        self.slots = asyncio.Semaphore(max_inflight)
        self.wait_s = wait_s
        self.retry_after = str(retry_after_s).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.EXEMPT:
            await self.app(scope, receive, send)
            return
        REQUESTS.inc()
        try:
            async with asyncio.timeout(self.wait_s):
                await self.slots.acquire()
        except TimeoutError:
            SHED.inc()
            await self._overloaded(send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.slots.release()

    async def _overloaded(self, send: Send) -> None:
        body = json.dumps(
            error_body("overloaded", "too many requests in flight; retry after Retry-After")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"retry-after", self.retry_after),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def install_load_shedding(app: FastAPI, max_inflight: int, wait_s: float) -> None:
    app.add_middleware(LoadShedMiddleware, max_inflight=max_inflight, wait_s=wait_s)


def secrets_equal(presented: str, expected: str) -> bool:
    """Constant-time comparison of two texts of any alphabet.

    `hmac.compare_digest` refuses `str` holding non-ASCII characters (a TypeError, so a 500):
    compare their UTF-8 bytes instead, so a credential in any script is just a wrong one.
    """
    return hmac.compare_digest(
        presented.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def check_api_key(presented: str | None, accepted: frozenset[str]) -> None:
    if not presented or not any(secrets_equal(presented, k) for k in accepted):
        raise Unauthorized("missing or invalid X-API-Key")


API_KEY_COOKIE = "dropship_api_key"
"""Where a browser page (the metrics dashboard) keeps the key it was opened with."""


def check_bearer(authorization: str | None, token: str) -> None:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets_equal(value.strip(), token):
        raise Unauthorized("missing or invalid service token")
