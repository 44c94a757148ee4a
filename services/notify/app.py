"""Notify service application factory (`uvicorn --factory services.notify.app:create_app`)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.notify.settings import NotifySettings
from services.notify.store import NotifyUnitOfWork
from shared.runtime import ServiceRuntime, build_app

MIGRATIONS = Path(__file__).parent / "migrations"


def create_app(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    runtime = ServiceRuntime(settings, MIGRATIONS, NotifyUnitOfWork)
    return build_app(
        runtime,
        title="Dropship notify service",
        description="Customer notices and ops alerts, each sent once and logged.",
    )
