"""Supplier service application factory (`uvicorn --factory services.supplier.app:create_app`)."""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.supplier import api, rma, webhooks
from services.supplier.adapter import SupplierClient
from services.supplier.availability import AvailabilityReporter
from services.supplier.breaker import CircuitBreaker
from services.supplier.consumers import BATCH, CONSUMERS
from services.supplier.directory import SupplierEntry
from services.supplier.dispatcher import Dispatcher, Wakeup, sla_clock, waiting_clock
from services.supplier.errors import DOMAIN_ERRORS
from services.supplier.journal import CallbackJournal
from services.supplier.reconciler import Reconciler
from services.supplier.settings import SupplierSettings
from services.supplier.ship_to import ShipToBook
from services.supplier.store import Sealer, SupplierDirectory, SupplierUnitOfWork
from shared.egress import guarded_client
from shared.http import install_domain_errors
from shared.idle import Alarm
from shared.runtime import ServiceRuntime, build_app
from shared.single_flight import SingleFlight

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def create_app(settings: SupplierSettings | None = None) -> FastAPI:
    settings = settings or SupplierSettings()
    sealer = Sealer.with_cipher(settings.cipher())
    wakeup = Wakeup()
    waiting_alarm = Alarm(settings.dispatcher_poll_s, settings.idle_poll_max_s)
    lease = timedelta(seconds=settings.supplier_lease_s)
    directory = SupplierDirectory(
        sealer, settings.supplier_cache_ttl_s, settings.supplier_cache_max_entries
    )
    uow_class = functools.partial(
        SupplierUnitOfWork,
        directory=directory,
        hand_off=wakeup.hand_off,
        wake_dispatcher=wakeup,
        wake_waiting=waiting_alarm.wake,
        lease=lease,
        check_after=timedelta(seconds=settings.supplier_check_after_s),
        retry_waiting_s=settings.supplier_retry_waiting_s,
        retry_waiting_max_s=settings.supplier_retry_waiting_max_s,
    )
    availability = AvailabilityReporter()
    breaker = CircuitBreaker(
        failure_rate=settings.breaker_failure_rate,
        cooldown_s=settings.breaker_cooldown_s,
        on_change=availability,
    )

    async def supplier_calls(runtime: ServiceRuntime[SupplierUnitOfWork]) -> None:
        """Dispatcher and reconciler share one client: one rate limit and breaker per supplier."""
        # few idle connections: httpcore scans every pooled connection on each request
        limits = httpx.Limits(
            max_connections=settings.dispatcher_concurrency, max_keepalive_connections=16
        )
        async with (
            httpx.AsyncClient(limits=limits) as http,  # the order service: ours, internal
            guarded_client(settings.egress_policy(), limits) as outside,  # suppliers' URLs
        ):
            client = SupplierClient(
                outside,
                breaker,
                timeout_s=settings.supplier_timeout_s,
                max_attempts=settings.supplier_max_attempts,
                backoff_initial_s=settings.supplier_backoff_s,
            )
            assert settings.public_url is not None
            dispatcher = Dispatcher(
                runtime,
                client,
                wakeup,
                directory,
                ShipToBook(
                    http,
                    settings.order_url,
                    settings.service_token.get_secret_value(),
                    linger_s=settings.supplier_ship_to_linger_ms / 1000,
                ),
                callback_base=settings.public_url,
                poll_s=settings.dispatcher_poll_s,
                idle_backoff=settings.idle_poll_backoff,
                concurrency=settings.dispatcher_concurrency,
                lease=lease,
            )
            reconciler = Reconciler(
                runtime,
                client,
                interval_s=settings.supplier_reconcile_interval_s,
                # an order sent or moving on is first due `check_after` later
                max_sleep_s=min(settings.idle_poll_max_s, settings.supplier_check_after_s),
                decision_timeout=timedelta(seconds=settings.supplier_decision_timeout_s),
                check_max=timedelta(seconds=settings.supplier_check_max_s),
            )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(dispatcher.run(), name="supplier:dispatcher")
                tasks.create_task(reconciler.run(), name="supplier:reconciler")

    async def sla(runtime: ServiceRuntime[SupplierUnitOfWork]) -> None:
        await sla_clock(
            runtime,
            settings.sla_scan_interval_s,
            handling=timedelta(seconds=settings.handling_sla_s),
            silence=timedelta(hours=settings.tracking_silence_h),
        )

    async def waiting(runtime: ServiceRuntime[SupplierUnitOfWork]) -> None:
        await waiting_clock(runtime, waiting_alarm)

    async def supplier_status(runtime: ServiceRuntime[SupplierUnitOfWork]) -> None:
        await availability.run(runtime.uow)

    journal = (
        CallbackJournal(settings.supplier_callback_journal_dir)
        if settings.supplier_callback_journal_dir
        else None
    )
    background = {
        "supplier-calls": supplier_calls,
        "sla-clock": sla,
        "waiting-lines": waiting,
        "supplier-status": supplier_status,
    }
    if journal is not None:
        background["callback-journal"] = journal.run

    runtime = ServiceRuntime(
        settings,
        MIGRATIONS,
        uow_class,
        handlers=CONSUMERS,
        background=background,
        batch_handler=BATCH if settings.route_in_batches else None,
    )
    app = build_app(
        runtime,
        title="Dropship supplier service",
        description="Suppliers, offers, routing with failover, supplier orders, SLA clocks.",
    )
    install_domain_errors(app, DOMAIN_ERRORS)
    app.add_exception_handler(webhooks.Busy, webhooks.busy)
    app.state.settings = settings
    app.state.breaker = breaker
    # returns desks answer apart from order intake: a slow one must not stop routing
    app.state.rma_breaker = CircuitBreaker(
        failure_rate=settings.breaker_failure_rate, cooldown_s=settings.breaker_cooldown_s
    )
    app.state.availability = availability
    app.state.directory = directory
    app.state.entry_reads = SingleFlight[str, SupplierEntry | None]()
    app.state.egress = settings.egress_policy()
    app.state.journal = journal
    app.state.webhook_slots = asyncio.Semaphore(settings.supplier_webhook_concurrency)
    app.state.callback_groups = webhooks.callback_groups(runtime, settings)
    app.include_router(api.router)
    app.include_router(webhooks.router)
    app.include_router(rma.router)
    return app
