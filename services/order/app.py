"""Order service application factory (`uvicorn --factory services.order.app:create_app`)."""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.order import api, handlers, ops_api, webhooks
from services.order.aftersales import api as aftersales_api
from services.order.consumers import BATCH, CONSUMERS
from services.order.intake_writer import IntakeWriter
from services.order.settings import OrderSettings
from services.order.shops import api as shops_api
from services.order.shops.writeback import run_writebacks
from services.order.store import OrderUnitOfWork
from shared.db import is_sqlite
from shared.http import install_domain_errors
from shared.idle import Alarm
from shared.runtime import ServiceRuntime, build_app

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


async def purge_expired_keys(runtime: ServiceRuntime[Any]) -> None:
    """Hourly: forget idempotency keys past their retention (kept at least 24 h)."""
    while True:
        purged = await handlers.purge_expired(runtime.uow())
        if purged:
            log.info("purged idempotency keys", extra={"count": purged})
        await asyncio.sleep(3600)


def create_app(settings: OrderSettings | None = None) -> FastAPI:
    settings = settings or OrderSettings()
    writebacks = Alarm(settings.writeback_poll_s, settings.idle_poll_max_s)
    uow_class = functools.partial(
        OrderUnitOfWork,
        cipher=settings.cipher(),
        intake=settings.intake(),
        wake_writeback=writebacks.wake,
    )
    background: dict[str, Any] = {"purge-idempotency-keys": purge_expired_keys}
    if settings.writeback_enabled:
        background["marketplace-writeback"] = functools.partial(run_writebacks, alarm=writebacks)
    runtime = ServiceRuntime(
        settings,
        MIGRATIONS,
        uow_class,
        handlers=CONSUMERS,
        background=background,
        batch_handler=BATCH,
    )
    app = build_app(
        runtime,
        title="Dropship order service",
        description="Storefront and marketplace orders: lifecycle, timeline, customer privacy.",
    )
    app.state.intake_writer = IntakeWriter(
        runtime.uow,
        linger_s=settings.order_intake_linger_ms / 1000,
        max_group=settings.order_intake_max_group,
        writers=settings.intake_writers(),
        one_trip=not is_sqlite(settings.db_url),
    )
    install_domain_errors(
        app,
        {**api.DOMAIN_ERRORS, **shops_api.SHOP_ERRORS, **aftersales_api.AFTERSALES_ERRORS},
    )
    app.include_router(ops_api.router)
    app.include_router(api.router)
    app.include_router(aftersales_api.router)
    app.include_router(shops_api.router)
    app.include_router(webhooks.router)
    return app
