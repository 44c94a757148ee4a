"""Ops console application factory (`uvicorn --factory services.console.app:create_app`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import text

from services.console import actions, admin, aftersales, auth_routes, inbox, orders, pages
from services.console.clients import Backends
from services.console.sessions import SessionCodec
from services.console.settings import ConsoleSettings
from services.console.stepup import StepUpRequired, stepup_page
from services.console.store import ConsoleStore
from services.console.web import Console, Refused, SessionMiddleware, SignInRequired, render
from shared.db import create_engine, migrate_async, session_factory
from shared.logging import configure_logging

log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
STATIC = Path(__file__).parent / "static"


def create_app(
    settings: ConsoleSettings | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The console; `transport` replaces real HTTP to the services (unit tests only)."""
    settings = settings or ConsoleSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging("console", settings.log_level, settings.log_json)
        engine = create_engine(settings.db_url)
        if settings.migrate_on_start:
            await migrate_async(MIGRATIONS, settings.db_url)
        backends = Backends(
            {
                "order": settings.order_url,
                "supplier": settings.supplier_url,
                "notify": settings.notify_url,
                "metrics": settings.metrics_url,
            },
            settings.api_key,
            settings.backend_timeout_s,
            transport,
        )
        app.state.engine = engine
        app.state.console = Console(
            settings,
            ConsoleStore(session_factory(engine)),
            backends,
            SessionCodec(settings.session_secret.get_secret_value(), settings.session_max_age_s),
        )
        log.info("console started", extra={"port": settings.port})
        try:
            yield
        finally:
            await backends.close()
            await engine.dispose()

    app = FastAPI(
        title="Dropship ops console",
        description="Where the ops team sees every exception and acts on it.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(SessionMiddleware)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, _: SignInRequired) -> Response:
        if request.headers.get("HX-Request"):
            return Response(status_code=401, headers={"HX-Redirect": "/login"})
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return render(request, "refused.html", status_code=403, reason=exc.key)

    @app.exception_handler(StepUpRequired)
    async def _step_up(request: Request, exc: StepUpRequired) -> Response:
        return stepup_page(request, exc)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": "console"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        try:
            async with asyncio.timeout(2.0), request.app.state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            ok = True
        except Exception:
            ok = False
        body = b'{"status":"ok"}' if ok else b'{"status":"unavailable"}'
        return Response(body, status_code=200 if ok else 503, media_type="application/json")

    app.include_router(auth_routes.router)
    app.include_router(actions.router)
    app.include_router(inbox.router)
    app.include_router(orders.router)
    app.include_router(aftersales.router)
    app.include_router(pages.router)
    app.include_router(admin.router)
    return app
