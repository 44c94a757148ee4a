"""Metrics service application factory (`uvicorn --factory services.metrics.app:create_app`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.metrics import aftersales_api, api, dashboard
from services.metrics.consumers import BATCH, CONSUMERS
from services.metrics.queries import FactsCache
from services.metrics.settings import MetricsSettings
from services.metrics.store import MetricsUnitOfWork
from shared.runtime import ServiceRuntime, build_app

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: MetricsSettings | None = None) -> FastAPI:
    settings = settings or MetricsSettings()
    runtime = ServiceRuntime(
        settings, MIGRATIONS, MetricsUnitOfWork, handlers=CONSUMERS, batch_handler=BATCH
    )
    app = build_app(
        runtime,
        title="Dropship metrics service",
        description="KPIs rebuilt exactly from the event stream: orders, GMV, margin, "
        "supplier confirmation, on-time shipping, delays, cycle time, notices, "
        "returns, refunds and complaints.",
    )
    app.state.facts = FactsCache(runtime.uow, settings.kpi_cache_s)
    app.include_router(api.router)
    app.include_router(aftersales_api.router)
    dashboard.install(app)
    return app
