"""Signed callbacks from suppliers and carriers: verify, dedupe, hand to the handlers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import Pool, QueuePool

from services.supplier.api import runtime_of, settings_of
from services.supplier.directory import SupplierEntry
from services.supplier.handlers import callbacks
from services.supplier.handlers.callbacks import (
    Outcome,
    Recorded,
    SupplierCallback,
    TrackingUpdate,
)
from services.supplier.journal import CallbackJournal
from services.supplier.schemas import CallbackIn, TrackingIn
from services.supplier.settings import SupplierSettings
from services.supplier.store import StockConflict, SupplierUnitOfWork
from shared.db import READ_ONLY
from shared.group_commit import GroupCommit
from shared.http import Unauthorized, Unprocessable, error_body
from shared.runtime import ServiceRuntime
from shared.signing import CallbackRefused, verify_callback
from shared.single_flight import SingleFlight

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
log = logging.getLogger(__name__)
SHED = Counter(
    "dropship_supplier_webhooks_shed",
    "Callbacks answered 503 (busy: no slot or database connection in time); senders retry.",
)
RETRY_AFTER_S = 1
M = TypeVar("M", bound=BaseModel)


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
        async with asyncio.timeout(settings_of(request).supplier_webhook_wait_s):
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


def _locked_out(exc: Exception) -> bool:
    """SQLite's write lock held by another writer past busy_timeout."""
    return isinstance(exc, DBAPIError) and "database is locked" in str(exc).lower()


def _contended(exc: DBAPIError) -> bool:
    """SQLite's writer lock held past busy_timeout, or a PostgreSQL deadlock victim."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40P01", "40001") or _locked_out(exc)


async def busy(_: Request, exc: Exception) -> JSONResponse:
    """`Busy` anywhere in a callback: 503 with Retry-After (installed on the app)."""
    SHED.inc()
    log.warning("callback shed: %s", exc)
    return JSONResponse(
        error_body("unavailable", f"busy ({exc}); retry later"),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _authentic(
    request: Request,
    prefix: str,
    raw: bytes,
    secret: str,
    signature: str | None,
    timestamp: str | None,
) -> None:
    """401 naming the reason unless the callback is signed with its timestamp, in the window
    (docs/supplier-api.md, "Signatures")."""
    settings = settings_of(request)
    try:
        verify_callback(
            body=raw,
            secret=secret,
            signature=signature,
            timestamp=timestamp,
            prefix=prefix,
            window_s=settings.callback_replay_window_s,
            accept_unstamped=settings.accept_unstamped_callbacks,
        )
    except CallbackRefused as exc:
        raise Unauthorized(str(exc)) from exc


def _parse(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate(json.loads(raw))
    except RecursionError as exc:  # nested deeper than the parser goes
        details = [{"field": "body", "reason": "nested too deeply"}]
        raise Unprocessable("body: nested too deeply", details=details) from exc
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
    202: {"description": "`recorded`: busy, kept in the callback journal, applied shortly"},
    503: {"description": "busy: retry after `Retry-After` seconds; nothing changed"},
}
RECORDED = {"status": "recorded"}


def _headers(prefix: str) -> dict[str, Any]:
    """The signed-callback headers, documented (read from the request directly: cheaper
    per callback than one FastAPI header parameter each)."""
    names = (
        (f"{prefix}-Signature", "hex HMAC-SHA256 of `<timestamp>.<body>`"),
        (f"{prefix}-Delivery-Id", "the same for every attempt of one delivery (dedupe)"),
        (f"{prefix}-Timestamp", "Unix seconds the signature was made"),
    )
    return {
        "parameters": [
            {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
             "description": what}
            for name, what in names
        ]
    }  # fmt: skip


def callback_groups(
    runtime: ServiceRuntime[SupplierUnitOfWork], settings: SupplierSettings
) -> GroupCommit[Recorded, Outcome]:
    """The group commit of a process's callbacks (linger 0: each in its own transaction)."""

    async def together(group: Sequence[Recorded]) -> list[Outcome] | None:
        """The group in one transaction; None (applied one by one, each answered as if
        alone) if it failed. That is safe even after a failed commit that did happen: a
        delivery id committed is a `duplicate` the second time, nothing changes twice."""
        try:
            return await callbacks.apply_recorded(runtime.uow(), group)
        except Exception as exc:
            if isinstance(exc, PoolTimeout) or _locked_out(exc):
                raise  # alone, each would wait as long again: every one of them is busy
            log.info("callback group applied one by one: %r", exc)
            return None

    async def alone(r: Recorded) -> Outcome:
        return await callbacks.apply_one(runtime.uow(), r)

    return GroupCommit(
        together,
        alone,
        linger_s=settings.supplier_callback_linger_ms / 1000,
        max_group=settings.supplier_callback_max_group,
        writers=settings.supplier_callback_writers,
        name="supplier_callbacks",
    )


async def _apply(request: Request, r: Recorded) -> Outcome:
    """`r` applied with the callbacks arriving with it (alone without a linger)."""
    groups: GroupCommit[Recorded, Outcome] = request.app.state.callback_groups
    return await groups.submit(r)


def _journal(request: Request) -> CallbackJournal | None:
    journal: CallbackJournal | None = getattr(request.app.state, "journal", None)
    return journal


async def _webhook_secret(request: Request, supplier_id: str) -> str:
    """The supplier's callback signing secret: the directory cache, read on a miss.

    Read before a callback slot is taken (an unsigned callback must not hold one): a
    plain read with no lock, refused with `Busy` rather than waiting on an exhausted pool.
    """
    hit, entry = request.app.state.directory.cached(supplier_id)
    if not hit:
        runtime = runtime_of(request)

        async def read() -> SupplierEntry | None:
            if _exhausted(runtime.engine.pool):
                raise Busy("no database connection free")
            try:
                async with runtime.uow() as uow:  # a read: no SQLite write lock
                    await uow.session.connection(execution_options={READ_ONLY: True})
                    return await uow.suppliers.entry(supplier_id)
            except PoolTimeout as exc:
                raise Busy("no database connection free") from exc

        # callbacks in flight when the entry expires share one read, not one connection each
        reads: SingleFlight[str, SupplierEntry | None] = request.app.state.entry_reads
        entry = await reads.load(supplier_id, read)
    return entry.credentials.webhook_secret if entry is not None else ""


@router.post(
    "/suppliers/{supplier_id}",
    summary="Supplier callback: accepted, rejected, backordered, dispatched",
    responses=BUSY,
    openapi_extra=_headers("X-Supplier"),
)
async def supplier_callback(
    supplier_id: str, request: Request, response: Response
) -> dict[str, str]:
    raw = await request.body()
    headers = request.headers
    # the signature first: an unsigned callback takes no slot and no database lock
    secret = await _webhook_secret(request, supplier_id)
    signature, stamp = headers.get("x-supplier-signature"), headers.get("x-supplier-timestamp")
    _authentic(request, "X-Supplier", raw, secret, signature, stamp)
    delivery = _delivery(headers.get("x-supplier-delivery-id"), "X-Supplier-Delivery-Id")
    body = _parse(CallbackIn, raw)
    if body.type == "dispatched" and not body.tracking_number:
        raise Unprocessable(
            "a dispatched callback needs tracking_number",
            details=[
                {"field": "body.tracking_number", "reason": "required when type is dispatched"}
            ],
        )
    callback = SupplierCallback(
        body.type,
        body.reference,
        body.supplier_order_ref,
        body.reason,
        body.carrier,
        body.tracking_number,
    )
    journal = _journal(request)
    try:
        if journal is not None and journal.pending:
            raise Busy("earlier callbacks wait in the journal")  # keep their order
        async with capacity(request):
            outcome = await _apply(request, Recorded(delivery, supplier_id, callback))
    except Busy:
        if journal is None:
            raise
        journal.record_supplier(supplier_id, delivery, callback)
        response.status_code = 202
        return RECORDED
    return {"status": outcome.value}


@router.post(
    "/tracking",
    summary="Carrier tracking update: in_transit, exception, delivered",
    responses=BUSY,
    openapi_extra=_headers("X-Tracking"),
)
async def tracking(request: Request, response: Response) -> dict[str, str]:
    raw = await request.body()
    headers = request.headers
    secret = settings_of(request).tracking_secret.get_secret_value()
    signature, stamp = headers.get("x-tracking-signature"), headers.get("x-tracking-timestamp")
    _authentic(request, "X-Tracking", raw, secret, signature, stamp)
    delivery = _delivery(headers.get("x-tracking-delivery-id"), "X-Tracking-Delivery-Id")
    body = _parse(TrackingIn, raw)
    update = TrackingUpdate(body.tracking_number, body.status, body.occurred_at)
    journal = _journal(request)
    try:
        if journal is not None and journal.pending:
            raise Busy("earlier callbacks wait in the journal")  # keep their order
        async with capacity(request):
            outcome = await _apply(request, Recorded(delivery, None, update))
    except Busy:
        if journal is None:
            raise
        journal.record_tracking(delivery, update)
        response.status_code = 202
        return RECORDED
    return {"status": outcome.value}
