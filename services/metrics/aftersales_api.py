"""After-sales KPI API: returns, refunds and complaints of a window, grouped like `/v1/kpis`."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from services.metrics import queries
from services.metrics.api import Facts, Money, Percentiles, Window, admin
from services.metrics.domain import GroupBy

router = APIRouter(prefix="/v1", tags=["kpis"], dependencies=[Depends(admin)])


class ReturnReason(BaseModel):
    returns: int = Field(description="Returns requested with this reason, not rejected")
    returned_orders: int
    returned_units: int
    return_rate: float | None = Field(description="Returned orders / shipped orders")


class RefundReason(BaseModel):
    refunds: int
    refunded_orders: int
    amount: Money
    refund_rate: float | None = Field(description="Refunded orders / orders")


class ComplaintStats(BaseModel):
    complaints: int = Field(description="Complaints filed")
    open: int = Field(description="Of those, not resolved yet")
    first_response_s: Percentiles = Field(description="Filed -> first response")
    resolution_s: Percentiles = Field(description="Filed -> resolved")
    responded_within_target: int = Field(description="First response by `respond_by`")
    response_target_missed: int = Field(
        description="Responded after `respond_by`, or still unanswered past it"
    )
    response_within_target_rate: float | None = Field(description="Within / (within + missed)")
    resolved_within_target: int = Field(description="Resolved by `resolve_by`")
    resolution_target_missed: int
    resolution_within_target_rate: float | None


class AfterSalesItem(BaseModel):
    """After-sales KPIs of one group; complaints are null by supplier (they name none)."""

    key: str = Field(description="UTC day (YYYY-MM-DD), supplier id, sales channel, or `all`")
    shipped_orders: int = Field(description="Orders first dispatched here")
    returns: int = Field(description="Returns requested here, whatever became of them")
    returns_by_status: dict[str, int] = Field(
        description="requested, authorized, received, refunded, rejected: where they are now"
    )
    returned_orders: int = Field(description="Orders with a return requested here, not rejected")
    returned_units: int
    return_rate: float | None = Field(description="Returned orders / shipped orders")
    returns_by_reason: dict[str, ReturnReason]
    orders: int = Field(description="Orders placed (as `orders` of `/v1/kpis`)")
    refunds: int = Field(description="Refunds issued here")
    refunded_orders: int
    refund_amount: Money = Field(description="Exact sum of refunds issued, per currency")
    refund_rate: float | None = Field(description="Refunded orders / orders")
    refunds_by_reason: dict[str, RefundReason]
    refund_cost_by_bearer: dict[str, dict[str, str]] = Field(
        description="`supplier` (charged back) and `merchant`: refunded amounts per currency"
    )
    complaints: ComplaintStats | None
    complaints_by_tier: dict[str, ComplaintStats] | None = Field(
        description="normal, urgent and major"
    )


class AfterSalesReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: date = Field(alias="from", description="First UTC day, inclusive")
    to: date = Field(description="Last UTC day, inclusive")
    group_by: GroupBy
    items: list[AfterSalesItem]
    total: AfterSalesItem = Field(description="The whole window, ungrouped (key `all`)")


@router.get(
    "/kpis/after-sales",
    response_model=AfterSalesReport,
    summary="Return, refund and complaint KPIs of a window of days, grouped like /v1/kpis",
    description="Returns by the day requested, refunds by the day issued, complaints by "
    "the day filed; exact on replay. Money is a decimal string per currency.",
)
async def after_sales(
    facts: Facts,
    days: Window,
    group_by: Annotated[GroupBy, Query(description="day, supplier or channel")] = GroupBy.DAY,
) -> dict[str, object]:
    return await queries.after_sales_report(facts, days, group_by, datetime.now(UTC))
