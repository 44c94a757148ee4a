"""Signed callbacks from suppliers and carriers: verify, dedupe, hand to the handlers."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.supplier import handlers
from services.supplier.api import UoW, runtime_of, settings_of
from shared.http import Unauthorized, Unprocessable

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


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


@router.post(
    "/suppliers/{supplier_id}",
    summary="Supplier callback: accepted, rejected, backordered, dispatched",
)
async def supplier_callback(
    supplier_id: str,
    request: Request,
    uow: UoW,
    x_supplier_signature: Annotated[str | None, Header()] = None,
    x_supplier_delivery_id: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    raw = await request.body()
    async with uow:
        row = await uow.supplier_row(supplier_id)
        secret = uow.sealer.load(row.credentials).webhook_secret if row is not None else ""
    if not _signed(raw, x_supplier_signature, secret):
        raise Unauthorized("invalid or missing X-Supplier-Signature")
    delivery = _delivery(x_supplier_delivery_id, "X-Supplier-Delivery-Id")
    body: CallbackIn = _parse(CallbackIn, raw)
    if body.type == "dispatched" and not body.tracking_number:
        raise Unprocessable(
            "a dispatched callback needs tracking_number",
            details=[
                {"field": "body.tracking_number", "reason": "required when type is dispatched"}
            ],
        )
    async with uow:
        if not await uow.first_delivery(f"supplier:{supplier_id}", delivery):
            return {"status": "duplicate"}
        outcome = await handlers.on_callback(uow, supplier_id, body.model_dump(mode="json"))
        await uow.commit()
    return {"status": outcome}


@router.post("/tracking", summary="Carrier tracking update: in_transit, exception, delivered")
async def tracking(
    request: Request,
    uow: UoW,
    x_tracking_signature: Annotated[str | None, Header()] = None,
    x_tracking_delivery_id: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    raw = await request.body()
    settings = settings_of(runtime_of(request))
    if not _signed(raw, x_tracking_signature, settings.tracking_secret.get_secret_value()):
        raise Unauthorized("invalid or missing X-Tracking-Signature")
    delivery = _delivery(x_tracking_delivery_id, "X-Tracking-Delivery-Id")
    body: TrackingIn = _parse(TrackingIn, raw)
    async with uow:
        if not await uow.first_delivery("tracking", delivery):
            return {"status": "duplicate"}
        outcome = await handlers.on_tracking(uow, body.model_dump(mode="json"))
        await uow.commit()
    return {"status": outcome}
