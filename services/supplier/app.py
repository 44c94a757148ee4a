"""Supplier service application factory (`uvicorn --factory services.supplier.app:create_app`)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client import Gauge

from services.supplier import api, webhooks
from services.supplier.adapter import SupplierClient
from services.supplier.breaker import BreakerState, CircuitBreaker
from services.supplier.consumers import HANDLERS
from services.supplier.dispatcher import Dispatcher, Wakeup, sla_clock
from services.supplier.settings import SupplierSettings
from services.supplier.store import Sealer, SupplierUnitOfWork
from shared.runtime import ServiceRuntime, build_app

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


BREAKER_OPEN = Gauge(
    "dropship_supplier_breaker_open",
    "1 while a supplier's circuit breaker is open.",
    ["supplier_id"],
)


def _on_breaker(supplier_id: str, old: BreakerState, new: BreakerState) -> None:
    BREAKER_OPEN.labels(supplier_id).set(1 if new is BreakerState.OPEN else 0)
    level = logging.WARNING if new is BreakerState.OPEN else logging.INFO
    log.log(
        level, "supplier circuit breaker %s -> %s", old, new, extra={"supplier_id": supplier_id}
    )


def create_app(settings: SupplierSettings | None = None) -> FastAPI:
    settings = settings or SupplierSettings()
    cipher = settings.cipher()
    sealer = Sealer(
        lambda text: cipher.encrypt(text, "supplier_credentials") or "",
        lambda token: cipher.decrypt(token, "supplier_credentials") or "",
    )
    wakeup = Wakeup()
    uow_class = functools.partial(SupplierUnitOfWork, sealer=sealer, wake_dispatcher=wakeup)
    breaker = CircuitBreaker(
        failure_rate=settings.breaker_failure_rate,
        cooldown_s=settings.breaker_cooldown_s,
        on_change=_on_breaker,
    )

    async def dispatch(runtime: ServiceRuntime[Any]) -> None:
        async with httpx.AsyncClient(
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=50)
        ) as http:
            client = SupplierClient(
                http,
                breaker,
                timeout_s=settings.supplier_timeout_s,
                max_attempts=settings.supplier_max_attempts,
                backoff_initial_s=settings.supplier_backoff_s,
            )
            assert settings.public_url is not None
            await Dispatcher(
                runtime,
                client,
                wakeup,
                callback_base=settings.public_url,
                poll_s=settings.dispatcher_poll_s,
                concurrency=settings.dispatcher_concurrency,
            ).run()

    async def sla(runtime: ServiceRuntime[Any]) -> None:
        await sla_clock(runtime, settings.sla_scan_interval_s)

    runtime = ServiceRuntime(
        settings,
        MIGRATIONS,
        uow_class,
        handlers=HANDLERS,
        background={"dispatcher": dispatch, "sla-clock": sla},
    )
    app = build_app(
        runtime,
        title="Dropship supplier service",
        description="Suppliers, offers, routing with failover, supplier orders, SLA clocks.",
    )
    app.state.breaker = breaker
    app.include_router(api.router)
    app.include_router(webhooks.router)
    return app
