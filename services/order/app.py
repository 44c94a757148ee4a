"""Order service application factory (`uvicorn --factory services.order.app:create_app`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.order.api import router
from services.order.settings import OrderSettings
from services.order.store import OrderUnitOfWork
from shared.runtime import ServiceRuntime, build_app

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: OrderSettings | None = None) -> FastAPI:
    settings = settings or OrderSettings()
    runtime = ServiceRuntime(settings, MIGRATIONS, OrderUnitOfWork)
    app = build_app(
        runtime,
        title="Dropship order service",
        description="Storefront and marketplace orders, their lifecycle and timeline.",
    )
    app.include_router(router)
    return app
