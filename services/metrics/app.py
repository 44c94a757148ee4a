"""Metrics service application factory (`uvicorn --factory services.metrics.app:create_app`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request

from services.metrics.consumers import HANDLERS
from services.metrics.settings import MetricsSettings
from services.metrics.store import MetricsUnitOfWork
from shared.runtime import ServiceRuntime, build_app

MIGRATIONS = Path(__file__).parent / "migrations"

router = APIRouter(prefix="/v1", tags=["kpis"])


def _uow(request: Request) -> MetricsUnitOfWork:
    runtime: ServiceRuntime[MetricsUnitOfWork] = request.app.state.runtime
    return runtime.uow()


@router.get("/events/counts", summary="How many events of each type have been seen")
async def event_counts(uow: Annotated[MetricsUnitOfWork, Depends(_uow)]) -> dict[str, int]:
    async with uow:
        return await uow.tallies()


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()
    runtime = ServiceRuntime(settings, MIGRATIONS, MetricsUnitOfWork, handlers=HANDLERS)
    app = build_app(
        runtime,
        title="Dropship metrics service",
        description="KPIs rebuilt exactly from the event stream.",
    )
    app.include_router(router)
    return app
