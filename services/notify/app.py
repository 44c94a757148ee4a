"""Notify service application factory (`uvicorn --factory services.notify.app:create_app`)."""

from __future__ import annotations

import functools
import logging
from datetime import timedelta
from pathlib import Path

import httpx
from fastapi import FastAPI

from services.notify import api
from services.notify.channels import EmlMailer, Mailer, SmtpMailer
from services.notify.consumers import BATCH, CONSUMERS
from services.notify.domain import Policy
from services.notify.errors import HTTP_ERRORS
from services.notify.handlers.complaints import complaint_loop
from services.notify.handoff import HandOff
from services.notify.holds import hold_alert_loop
from services.notify.rendering import Renderer
from services.notify.sender import Sender, Wakeup
from services.notify.settings import NotifySettings
from services.notify.store import NotifyUnitOfWork
from services.notify.watch import dlq_watch, escalation_loop, waiting_loop
from shared.http import install_domain_errors
from shared.runtime import ServiceRuntime, build_app

MIGRATIONS = Path(__file__).parent / "migrations"
log = logging.getLogger(__name__)


def mailer_for(settings: NotifySettings) -> Mailer:
    if settings.smtp_url is None:
        return EmlMailer((settings.data_dir / "mail").resolve())
    return SmtpMailer.from_url(settings.smtp_url.get_secret_value(), settings.send_timeout_s)


def policy_for(settings: NotifySettings) -> Policy:
    return Policy(
        digest_window=timedelta(seconds=settings.digest_window_s),
        sms_enabled=bool(settings.sms_webhook_url),
        ops_channels=tuple((hook.kind, hook.name or hook.kind) for hook in settings.ops_channels),
        targets=settings.response_targets,
    )


def create_app(settings: NotifySettings | None = None) -> FastAPI:
    settings = settings or NotifySettings()
    wakeup = Wakeup()
    renderer = Renderer()
    policy = policy_for(settings)
    hand_off = HandOff(
        wakeup.event.set,
        timedelta(seconds=settings.send_lease_s),
        settings.sender_concurrency,
        enabled=settings.send_handoff,
    )
    uow_class = functools.partial(
        NotifyUnitOfWork, policy=policy, wake_sender=wakeup, hand_off=hand_off
    )
    if not policy.ops_channels:
        log.warning(
            "DROPSHIP_OPS_WEBHOOKS is empty: alerts are recorded (GET /v1/alerts) but sent nowhere"
        )

    async def send(runtime: ServiceRuntime[NotifyUnitOfWork]) -> None:
        async with httpx.AsyncClient(timeout=settings.send_timeout_s) as http:
            mailer = mailer_for(settings)
            try:
                sender = Sender(
                    runtime.uow, settings, http, mailer, wakeup, renderer, hand_off=hand_off
                )
                await sender.run()
            finally:
                await mailer.close()

    async def escalate(runtime: ServiceRuntime[NotifyUnitOfWork]) -> None:
        await escalation_loop(runtime.uow, settings.escalation_scan_s)

    async def watch_holds(runtime: ServiceRuntime[NotifyUnitOfWork]) -> None:
        await hold_alert_loop(runtime.uow, settings.hold_alert_after_s, settings.hold_scan_s)

    async def complaints(runtime: ServiceRuntime[NotifyUnitOfWork]) -> None:
        await complaint_loop(runtime.uow, settings.escalation_scan_s)

    async def waiting(runtime: ServiceRuntime[NotifyUnitOfWork]) -> None:
        after = timedelta(seconds=settings.waiting_alert_after_s)
        await waiting_loop(runtime.uow, settings.escalation_scan_s, after)

    async def watch_dlqs(runtime: ServiceRuntime[NotifyUnitOfWork]) -> None:
        await dlq_watch(runtime, settings.dlq_watch_s)

    runtime = ServiceRuntime(
        settings,
        MIGRATIONS,
        uow_class,
        handlers=CONSUMERS,
        batch_handler=BATCH,
        background={
            "sender": send,
            "escalation": escalate,
            "watch": watch_dlqs,
            "holds": watch_holds,
            "waiting": waiting,
            "complaints": complaints,
        },
    )
    app = build_app(
        runtime,
        title="Dropship notify service",
        description="Customer notices and ops alerts, each sent once and logged.",
    )
    app.state.api = api.ApiDeps(runtime=runtime, settings=settings, renderer=renderer)
    install_domain_errors(app, HTTP_ERRORS)
    app.include_router(api.router)
    return app
