"""Signed callbacks from suppliers and carriers: verify, dedupe, hand to the handlers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import Pool, QueuePool

from services.supplier import handlers
from services.supplier.api import UoW, runtime_of, settings_of
from services.supplier.store import StockConflict
from shared.http import Unauthorized, Unprocessable, error_body

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
log = logging.getLogger(__name__)
SHED = Counter(
    "dropship_supplier_webhooks_shed",
    "Callbacks answered 503 (busy: no slot or database connection in time); senders retry.",
)
RETRY_AFTER_S = 1


class Busy(Exception):
    """No capacity to take a callback now: answered 503 with Retry-After, nothing changed."""


@contextlib.asynccontextmanager
async def capacity(request: Request) -> AsyncIterator[None]:
    """A callback slot within `supplier_webhook_wait_s` and a free database connection, or
    `Busy`.

    Callbacks are retried by their senders, so under overload it is better to say so at
    once than to hold the sender until a pool timeout; the slots also keep callbacks from
    taking every connection the consumer and the dispatcher need. The pool is probed, not
    waited on with a deadline: cancelling a checkout that is already beginning a
    transaction could leave SQLite's write lock held by a connection nobody uses.
    """
    slots: asyncio.Semaphore = request.app.state.webhook_slots
    runtime = runtime_of(request)
    try:
        async with asyncio.timeout(settings_of(runtime).supplier_webhook_wait_s):
            await slots.acquire()
    except TimeoutError as exc:
        raise Busy("no callback slot free") from exc
    try:
        if _exhausted(runtime.engine.pool):
            raise Busy("no database connection free")
        yield
    except PoolTimeout as exc:
        raise Busy("no database connection free") from exc
    except StockConflict as exc:  # failing over raced other orders for the same stock
        raise Busy("stock contended") from exc
    except (OperationalError, DBAPIError) as exc:
        if not _contended(exc):
            raise
        raise Busy("database busy") from exc
    finally:
        slots.release()


def _exhausted(pool: Pool) -> bool:
    """Every connection of a bounded pool is checked out and no more may be opened."""
    if not isinstance(pool, QueuePool):
        return False
    limit = getattr(pool, "_max_overflow", -1)  # QueuePool keeps no public accessor for it
    return pool.checkedin() == 0 and limit >= 0 and pool.overflow() >= limit


def _contended(exc: DBAPIError) -> bool:
    """SQLite's writer lock held past busy_timeout, or a PostgreSQL deadlock victim."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40P01", "40001") or "database is locked" in str(exc).lower()


def busy(exc: Busy) -> JSONResponse:
    SHED.inc()
    log.warning("callback shed: %s", exc)
    return JSONResponse(
        error_body("unavailable", f"busy ({exc}); retry later"),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


class CallbackIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["accepted", "rejected", "backordered", "dispatched"]
    reference: Annotated[str, Field(min_length=1, max_length=64)]
    supplier_order_ref: Annotated[str, Field(max_length=128)] | None = None
    reason: Annotated[str, Field(max_length=500)] | None = None
    carrier: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    tracking_number: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    occurred_at: datetime | None = None


class TrackingIn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    carrier: Annotated[str, Field(max_length=64)] = "unknown"
    tracking_number: Annotated[str, Field(min_length=1, max_length=128)]
    status: Literal["in_transit", "exception", "delivered"]
    occurred_at: datetime | None = None
    detail: Annotated[str, Field(max_length=500)] | None = None


def _signed(raw: bytes, signature: str | None, secret: str) -> bool:
    if not signature or not secret:
        return False
    expected = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.strip().lower())


def _parse(model: type[BaseModel], raw: bytes) -> Any:
    try:
        return model.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        details = (
            [
                {"field": "body." + ".".join(str(p) for p in e["loc"]), "reason": e["msg"]}
                for e in exc.errors()
            ]
            if isinstance(exc, ValidationError)
            else [{"field": "body", "reason": "not JSON"}]
        )
        raise Unprocessable(
            f"{details[0]['field']}: {details[0]['reason']}", details=details
        ) from exc


def _delivery(value: str | None, header: str) -> str:
    if not value or len(value) > 128:
        raise Unprocessable(
            f"{header} header is required (at most 128 characters)",
            details=[{"field": f"header.{header}", "reason": "missing or too long"}],
        )
    return value


BUSY: dict[int | str, dict[str, Any]] = {
    503: {"description": "busy: retry after `Retry-After` seconds; nothing changed"}
}


@router.post(
    "/suppliers/{supplier_id}",
    summary="Supplier callback: accepted, rejected, backordered, dispatched",
    responses=BUSY,
)
async def supplier_callback(
    supplier_id: str,
    request: Request,
    uow: UoW,
    x_supplier_signature: Annotated[str | None, Header()] = None,
    x_supplier_delivery_id: Annotated[str | None, Header()] = None,
) -> Any:
    raw = await request.body()
    try:
        async with uow, capacity(request):
            entry = await uow.supplier(supplier_id)  # the directory cache: rarely a query
            secret = entry.credentials.webhook_secret if entry is not None else ""
            if not _signed(raw, x_supplier_signature, secret):
                raise Unauthorized("invalid or missing X-Supplier-Signature")
            delivery = _delivery(x_supplier_delivery_id, "X-Supplier-Delivery-Id")
            body: CallbackIn = _parse(CallbackIn, raw)
            if body.type == "dispatched" and not body.tracking_number:
                raise Unprocessable(
                    "a dispatched callback needs tracking_number",
                    details=[
                        {
                            "field": "body.tracking_number",
                            "reason": "required when type is dispatched",
                        }
                    ],
                )
            if not await uow.first_delivery(f"supplier:{supplier_id}", delivery):
                return {"status": "duplicate"}
            outcome = await handlers.on_callback(uow, supplier_id, body.model_dump(mode="json"))
            await uow.commit()
    except Busy as exc:
        return busy(exc)
    return {"status": outcome}


@router.post(
    "/tracking",
    summary="Carrier tracking update: in_transit, exception, delivered",
    responses=BUSY,
)
async def tracking(
    request: Request,
    uow: UoW,
    x_tracking_signature: Annotated[str | None, Header()] = None,
    x_tracking_delivery_id: Annotated[str | None, Header()] = None,
) -> Any:
    raw = await request.body()
    settings = settings_of(runtime_of(request))
    if not _signed(raw, x_tracking_signature, settings.tracking_secret.get_secret_value()):
        raise Unauthorized("invalid or missing X-Tracking-Signature")
    delivery = _delivery(x_tracking_delivery_id, "X-Tracking-Delivery-Id")
    body: TrackingIn = _parse(TrackingIn, raw)
    try:
        async with uow, capacity(request):
            if not await uow.first_delivery("tracking", delivery):
                return {"status": "duplicate"}
            outcome = await handlers.on_tracking(uow, body.model_dump(mode="json"))
            await uow.commit()
    except Busy as exc:
        return busy(exc)
    return {"status": outcome}
