"""Simulator app factory: `uvicorn --factory rigs.supplier_simulator.app:create_app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from rigs.supplier_simulator.api import control, health, supplier_api
from rigs.supplier_simulator.engine import Simulator
from rigs.supplier_simulator.settings import SimulatorSettings
from shared.http import install_error_handlers
from shared.logging import configure_logging


def create_app(
    settings: SimulatorSettings | None = None,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """Build the app; `transport` replaces the network for outbound callbacks (tests)."""
    settings = settings or SimulatorSettings()
    simulator = Simulator(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        configure_logging("simulator", settings.log_level, settings.log_json)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # deliveries log their outcome
        timeout = httpx.Timeout(settings.callback_timeout_s)
        async with httpx.AsyncClient(transport=transport, timeout=timeout) as client:
            simulator.start(client)
            try:
                yield
            finally:
                await simulator.stop()

    app = FastAPI(
        title="Dropship supplier simulator",
        description="Simulated suppliers speaking the supplier API (docs/supplier-api.md), "
        "steered through /_control. Run one process (its state is kept under the data folder).",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.simulator = simulator
    install_error_handlers(app)
    app.include_router(health)
    app.include_router(control)
    app.include_router(supplier_api)
    return app
