"""Supplier service application factory (`uvicorn --factory services.supplier.app:create_app`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.supplier.consumers import HANDLERS
from services.supplier.settings import SupplierSettings
from services.supplier.store import SupplierUnitOfWork
from shared.runtime import ServiceRuntime, build_app

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: SupplierSettings | None = None) -> FastAPI:
    settings = settings or SupplierSettings()
    runtime = ServiceRuntime(settings, MIGRATIONS, SupplierUnitOfWork, handlers=HANDLERS)
    return build_app(
        runtime,
        title="Dropship supplier service",
        description="Suppliers, offers, routing, supplier orders, shipments and SLA clocks.",
    )
