"""Metrics HTTP API: KPIs by day, supplier or channel, the supplier ranking, event counts."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from services.metrics import queries
from services.metrics.domain import GroupBy
from services.metrics.store import MetricsUnitOfWork
from shared.http import API_KEY_COOKIE, Unprocessable, check_api_key
from shared.runtime import ServiceRuntime

AdminKeyHeader = APIKeyHeader(name="X-API-Key", auto_error=False, description="Admin API key")


async def admin(
    request: Request, x_api_key: Annotated[str | None, Security(AdminKeyHeader)] = None
) -> None:
    """GMV and margins are the merchant's: an admin key, in the header or the dashboard's cookie."""
    presented = x_api_key or request.cookies.get(API_KEY_COOKIE)
    check_api_key(presented, request.app.state.runtime.settings.admin_key_set)


router = APIRouter(prefix="/v1", tags=["kpis"], dependencies=[Depends(admin)])

MAX_DAYS = 366
DEFAULT_DAYS = 30
EARLIEST = date(2000, 1, 1)
LATEST = date(2999, 12, 31)


async def _runtime(request: Request) -> ServiceRuntime[MetricsUnitOfWork]:
    runtime: ServiceRuntime[MetricsUnitOfWork] = request.app.state.runtime
    return runtime


Runtime = Annotated[ServiceRuntime[MetricsUnitOfWork], Depends(_runtime)]


async def new_uow(runtime: Runtime) -> MetricsUnitOfWork:
    return runtime.uow()


async def facts_cache(request: Request) -> queries.FactsCache:
    cache: queries.FactsCache = request.app.state.facts
    return cache


UoW = Annotated[MetricsUnitOfWork, Depends(new_uow)]
Facts = Annotated[queries.FactsCache, Depends(facts_cache)]
Money = Annotated[
    dict[str, str], Field(description='Decimal strings by ISO-4217 currency, e.g. {"USD": "12.50"}')
]


class Percentiles(BaseModel):
    p50: float | None = Field(
        description="Median, seconds (nearest rank, from log-spaced bins: the mean of the "
        "median sample's bin, within 9.05 % of it); null without samples"
    )
    p95: float | None = Field(description="95th percentile, seconds (nearest rank, same bins)")
    count: int = Field(description="Samples (exact)")


class NoticeCount(BaseModel):
    kind: str
    channel: str
    status: str
    count: int


class KpiItem(BaseModel):
    """KPIs of one group. Null: not defined for this grouping (e.g. cancellations per supplier)
    or no data to divide by."""

    key: str = Field(description="UTC day (YYYY-MM-DD), supplier id, sales channel, or `all`")
    orders: int = Field(description="Orders placed (by supplier: orders with lines it confirmed)")
    gmv: Money
    aov: Money = Field(description="GMV / orders, rounded half-even to the currency's minor unit")
    gross_margin: Money = Field(description="Sale price - supplier cost over confirmed lines")
    confirmed_orders: int | None
    confirmation_rate: float | None = Field(description="Confirmed / (confirmed + routing failed)")
    confirmation_latency_s: Percentiles = Field(description="Placed -> supplier confirmation")
    supplier_orders_due: int = Field(description="Supplier orders whose ship_by falls here")
    shipped_on_time: int
    shipped_late: int = Field(description="Dispatched after ship_by, or no tracking by then")
    on_time_rate: float | None = Field(description="On time / (on time + late)")
    delayed_supplier_orders: int
    delay_rate: float | None = Field(description="Delayed / due supplier orders")
    delays_by_reason: dict[str, int]
    delay_rate_by_reason: dict[str, float | None]
    deliveries: int
    cycle_time_s: Percentiles = Field(description="Placed -> delivered, per shipment")
    cancellations: int | None
    cancellations_by_reason: dict[str, int] | None
    routing_failures: int | None
    routing_failures_by_reason: dict[str, int] | None
    holds: int | None = Field(None, description="Orders put on hold (order-held), by hold day")
    holds_by_reason: dict[str, int] | None = None
    releases: int | None = Field(None, description="Orders released from every hold")
    notices_sent: int | None = Field(description="Notices with status `sent`")
    notices: list[NoticeCount] | None = Field(description="Notices by kind, channel and status")


class KpiReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: date = Field(alias="from", description="First UTC day, inclusive")
    to: date = Field(description="Last UTC day, inclusive")
    group_by: GroupBy
    items: list[KpiItem]
    total: KpiItem = Field(description="The whole window, ungrouped (key `all`)")


_ITEM = TypeAdapter(KpiItem)


def render_item(item: dict[str, object]) -> bytes:
    """An item's JSON exactly as the response model renders it inside a `KpiReport`."""
    return _ITEM.dump_json(_ITEM.validate_python(item))


class RankedSupplier(KpiItem):
    rank: int
    supplier_id: str


class SupplierRanking(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    from_: date = Field(alias="from")
    to: date
    items: list[RankedSupplier]
    next_cursor: str | None = None


def window(
    first: Annotated[
        date | None,
        Query(alias="from", description="First UTC day (YYYY-MM-DD); default: 29 days before `to`"),
    ] = None,
    last: Annotated[
        date | None, Query(alias="to", description="Last UTC day, inclusive; default: today")
    ] = None,
) -> queries.Window:
    """The requested days, checked: in order, at most MAX_DAYS, within sane years."""
    for name, value in (("from", first), ("to", last)):
        if value is not None and not EARLIEST <= value <= LATEST:
            raise Unprocessable(
                f"query.{name}: must be between {EARLIEST} and {LATEST}",
                details=[{"field": f"query.{name}", "reason": "out of range"}],
            )
    last = last or datetime.now(UTC).date()
    first = first or last - timedelta(days=DEFAULT_DAYS - 1)
    if first > last:
        raise Unprocessable(
            "query.from: must not be after `to`",
            details=[{"field": "query.from", "reason": f"{first} is after to={last}"}],
        )
    if (last - first).days + 1 > MAX_DAYS:
        raise Unprocessable(
            f"query.to: a window is at most {MAX_DAYS} days",
            details=[{"field": "query.to", "reason": f"{(last - first).days + 1} days requested"}],
        )
    return queries.Window(first, last)


Window = Annotated[queries.Window, Depends(window)]


@router.get(
    "/kpis",
    response_model=KpiReport,
    summary="KPIs of a window of days, grouped by day, supplier or channel",
    description="Read from rollups kept with every event received (see the metrics service "
    "docs for which event time each KPI is counted by): counts and money exact, money a "
    "decimal string per currency, percentiles from log-spaced bins within 9.05 %.",
)
async def kpis(
    facts: Facts,
    days: Window,
    group_by: Annotated[GroupBy, Query(description="day, supplier or channel")] = GroupBy.DAY,
) -> dict[str, object] | Response:
    if group_by is GroupBy.DAY:  # each day's item kept rendered: the same body, built cheaper
        body = await queries.day_report(facts, days, render_item)
        return Response(body, media_type="application/json")
    return await queries.report(facts, days, group_by)


@router.get(
    "/suppliers/ranking",
    response_model=SupplierRanking,
    summary="Suppliers ranked by on-time rate, then delay rate, over a window of days",
)
async def supplier_ranking(facts: Facts, days: Window) -> dict[str, object]:
    return await queries.supplier_ranking(facts, days)


@router.get("/events/counts", summary="How many distinct events of each type have been applied")
async def event_counts(runtime: Runtime, uow: UoW) -> dict[str, int]:
    return await queries.event_counts(runtime.name, uow)
