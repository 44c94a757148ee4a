"""After-sales routes (`X-API-Key`): returns, refunds and complaints; the handlers decide."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query
from fastapi.responses import JSONResponse

from services.order.aftersales import handlers
from services.order.aftersales.domain import RefundAsk, ReturnStatus
from services.order.aftersales.errors import (
    ComplaintClosed,
    ComplaintNotFound,
    InvalidAfterSales,
    NothingShipped,
    RefundExceedsPaid,
    ReturnNotFound,
    ReturnStatusConflict,
    RmaUnavailable,
)
from services.order.aftersales.rma import SupplierRmaClient
from services.order.aftersales.schemas import (
    ComplaintIn,
    ComplaintOut,
    ComplaintPage,
    NoteIn,
    RefundIn,
    RefundList,
    RefundOut,
    ResolveIn,
    RespondIn,
    ReturnIn,
    ReturnOut,
    ReturnPage,
    render_complaint,
    render_refund,
    render_return,
)
from services.order.api import ApiKey, Runtime, UoW, settings_of
from shared.http import ErrorMapping

RETRY_AFTER_S = 5
AFTERSALES_ERRORS: dict[type[Exception], ErrorMapping] = {
    ReturnNotFound: ErrorMapping(404, "not_found"),
    ComplaintNotFound: ErrorMapping(404, "not_found"),
    NothingShipped: ErrorMapping(409, "not_shipped"),
    ReturnStatusConflict: ErrorMapping(409, "invalid_transition"),
    RefundExceedsPaid: ErrorMapping(409, "refund_exceeds_paid"),
    ComplaintClosed: ErrorMapping(409, "complaint_resolved"),
    InvalidAfterSales: ErrorMapping(422, "validation_error"),
    RmaUnavailable: ErrorMapping(
        503, "supplier_unavailable", headers={"Retry-After": str(RETRY_AFTER_S)}
    ),
}
"""Every after-sales error (`services.order.aftersales.errors`) as the error shape."""

router = APIRouter(prefix="/v1", tags=["after-sales"])
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(max_length=500)]


def note_of(body: Annotated[NoteIn | None, Body()] = None) -> str | None:
    """The note of a return transition's optional body (`{}`, `{"note"}` or none at all)."""
    return body.note if body else None


OptionalNote = Annotated[str | None, Depends(note_of)]


def rma_desk(runtime: Runtime) -> SupplierRmaClient:
    s = settings_of(runtime)
    return SupplierRmaClient(
        s.supplier_url,
        s.service_token.get_secret_value(),
        timeout_s=s.rma_timeout_s,
        retry_for_s=s.rma_retry_for_s,
    )


Desk = Annotated[SupplierRmaClient, Depends(rma_desk)]


# -- returns ---------------------------------------------------------------------------
@router.post(
    "/orders/{order_id}/returns",
    status_code=201,
    response_model=ReturnOut,
    summary="Request a return of shipped lines (one supplier per return)",
    responses={
        409: {"description": "nothing of the order has shipped"},
        422: {"description": "a line not shipped, too many, or lines of several suppliers"},
    },
)
async def request_return(order_id: str, body: ReturnIn, uow: UoW, _: ApiKey) -> dict[str, Any]:
    lines = [ln.to_item() for ln in body.lines]
    ret = await handlers.request_return(order_id, body.reason, lines, body.note, uow)
    return render_return(ret)


@router.get("/returns", response_model=ReturnPage, summary="Returns, newest first")
async def list_returns(
    uow: UoW,
    _: ApiKey,
    status: ReturnStatus | None = None,
    order_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    items, next_cursor = await handlers.list_returns(
        status.value if status else None, order_id, limit, cursor, uow
    )
    return {"items": [render_return(r) for r in items], "next_cursor": next_cursor}


@router.get("/returns/{return_id}", response_model=ReturnOut, summary="One return")
async def read_return(return_id: str, uow: UoW, _: ApiKey) -> dict[str, Any]:
    return render_return(await handlers.get_return(return_id, uow))


@router.post(
    "/returns/{return_id}/authorize",
    response_model=ReturnOut,
    summary="Ask the supplier for an RMA: authorized with its RMA and address, or rejected",
    responses={
        409: {"description": "the return is not requested"},
        503: {"description": "the supplier did not answer in time (Retry-After); unchanged"},
    },
)
async def authorize(
    return_id: str, uow: UoW, _: ApiKey, desk: Desk, note: OptionalNote
) -> dict[str, Any]:
    return render_return(await handlers.authorize_return(return_id, note, uow, desk))


@router.post(
    "/returns/{return_id}/reject",
    response_model=ReturnOut,
    summary="Reject a requested or authorized return; the note tells the customer why",
    responses={409: {"description": "the return is received, refunded or rejected"}},
)
async def reject(return_id: str, uow: UoW, _: ApiKey, note: OptionalNote) -> dict[str, Any]:
    return render_return(await handlers.reject_return(return_id, note, uow))


@router.post(
    "/returns/{return_id}/receive",
    response_model=ReturnOut,
    summary="The goods of an authorized return arrived back",
    responses={409: {"description": "the return is not authorized"}},
)
async def receive(return_id: str, uow: UoW, _: ApiKey, note: OptionalNote) -> dict[str, Any]:
    return render_return(await handlers.receive_return(return_id, note, uow))


# -- refunds ---------------------------------------------------------------------------
@router.post(
    "/orders/{order_id}/refunds",
    status_code=201,
    response_model=RefundOut,
    summary="Refund an amount or lines (never more than was paid); emits refund-issued",
    responses={
        409: {"description": "more than remains refundable, key reused, or return status"},
        422: {"description": "a line or amount breaks a rule (field named)"},
    },
)
async def refund(
    order_id: str,
    body: RefundIn,
    uow: UoW,
    key: ApiKey,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=255)] = None,
) -> JSONResponse:
    ask = RefundAsk(
        body.amount,
        tuple(ln.to_item() for ln in body.lines),
        body.reason,
        body.return_id,
    )
    idem = None
    if idempotency_key is not None:
        fingerprint = hashlib.sha256(
            json.dumps(
                {"order_id": order_id, **body.model_dump(mode="json")}, sort_keys=True
            ).encode()
        ).hexdigest()
        scope = "refund:" + hashlib.sha256(key.encode()).hexdigest()[:32]
        idem = handlers.RefundIdempotency(scope, idempotency_key, fingerprint, render_refund)
    match await handlers.refund_order(order_id, ask, uow, idempotency=idem):
        case handlers.Replayed(snapshot):
            return JSONResponse(snapshot, status_code=201, headers={"Idempotent-Replayed": "true"})
        case handlers.Issued(issued):
            return JSONResponse(render_refund(issued), status_code=201)


@router.get("/orders/{order_id}/refunds", response_model=RefundList, summary="An order's refunds")
async def list_refunds(order_id: str, uow: UoW, _: ApiKey) -> dict[str, Any]:
    items = await handlers.list_refunds(order_id, uow)
    return {"items": [render_refund(r) for r in items], "next_cursor": None}


# -- complaints ------------------------------------------------------------------------
@router.post(
    "/complaints",
    status_code=201,
    response_model=ComplaintOut,
    summary="File a complaint against an order; the tier sets the response target",
)
async def file_complaint(
    body: ComplaintIn, uow: UoW, runtime: Runtime, _: ApiKey
) -> dict[str, Any]:
    targets = settings_of(runtime).complaint_targets()
    complaint = await handlers.file_complaint(body.order_id, body.tier, body.summary, targets, uow)
    return render_complaint(complaint)


@router.get("/complaints", response_model=ComplaintPage, summary="Complaints, newest first")
async def list_complaints(
    uow: UoW,
    _: ApiKey,
    open: Annotated[bool | None, Query(description="true: not resolved; false: resolved")] = None,
    order_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    items, next_cursor = await handlers.list_complaints(open, order_id, limit, cursor, uow)
    return {"items": [render_complaint(c) for c in items], "next_cursor": next_cursor}


@router.get("/complaints/{complaint_id}", response_model=ComplaintOut, summary="One complaint")
async def read_complaint(complaint_id: str, uow: UoW, _: ApiKey) -> dict[str, Any]:
    return render_complaint(await handlers.get_complaint(complaint_id, uow))


@router.post(
    "/complaints/{complaint_id}/respond",
    response_model=ComplaintOut,
    summary="Respond (the first response stops the response clock)",
    responses={409: {"description": "the complaint is resolved"}},
)
async def respond(complaint_id: str, body: RespondIn, uow: UoW, _: ApiKey) -> dict[str, Any]:
    complaint = await handlers.respond_to_complaint(complaint_id, body.by, body.message, uow)
    return render_complaint(complaint)


@router.post(
    "/complaints/{complaint_id}/resolve",
    response_model=ComplaintOut,
    summary="Resolve once (409 after)",
    responses={409: {"description": "the complaint is resolved already"}},
)
async def resolve(complaint_id: str, body: ResolveIn, uow: UoW, _: ApiKey) -> dict[str, Any]:
    complaint = await handlers.resolve_complaint(complaint_id, body.by, body.resolution, uow)
    return render_complaint(complaint)
