"""Fixtures of the integration tests: the simulators and a served supplier service."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from services.supplier.app import create_app
from services.supplier.settings import SupplierSettings
from shared.infra import free_port
from tests.support.marketplace import MARKETPLACE_APP
from tests.support.order_contacts import OrderContacts, contacts_process
from tests.support.services import SIMULATOR_APP, ServiceProcess, served


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory):
    """The marketplace simulator in its own process, shared by a module's tests."""
    log = tmp_path_factory.mktemp("market") / "marketplace.log"
    proc = ServiceProcess("marketplace", {}, free_port(), log, app=MARKETPLACE_APP).start()
    try:
        yield proc
    finally:
        proc.stop()


def simulator_process(log_dir: Path) -> ServiceProcess:
    """The supplier simulator's process, not started yet (`.start()`).

    The carrier's tracking updates reach no service: they go to a path of the simulator's
    own that answers 404, so each is refused at once (a closed port is a transport error,
    retried with backoff for about 18 s before the parcel moves on to delivered)."""
    port = free_port()
    return ServiceProcess(
        "simulator",
        {
            "DROPSHIP_SIMULATOR_SEED": "7",
            "DROPSHIP_LOG_JSON": "false",
            "DROPSHIP_SIMULATOR_TRACKING_URL": f"http://127.0.0.1:{port}/no-tracking-here",
        },
        port,
        log_dir / "simulator.log",
        app=SIMULATOR_APP,
    )


HELPERS = {"simulator": simulator_process, "order_contacts": contacts_process}


class Spares:
    """One started, still unused process of each helper kind, kept by the test process.

    Each takes about a second to import and bind its port. A test takes the spare (by then
    answering, or nearly) and the next one starts behind it, while the test runs: every
    test still gets a fresh process of its own, without waiting for it to start.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._started = 0
        self._spare: dict[str, ServiceProcess] = {}

    def _start(self, kind: str) -> ServiceProcess:
        self._started += 1
        log_dir = self._folder / f"{kind}-{self._started}"
        log_dir.mkdir()
        return HELPERS[kind](log_dir).start(wait=False)

    def take(self, kind: str) -> ServiceProcess:
        proc = self._spare.pop(kind, None)
        if proc is None or proc.process is None or proc.process.poll() is not None:
            proc = self._start(kind)
        self._spare[kind] = self._start(kind)
        return proc

    def close(self) -> None:
        for proc in self._spare.values():
            proc.terminate()
        for proc in self._spare.values():
            proc.stop()


@pytest.fixture(scope="session")
def spares(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spares]:
    kept = Spares(tmp_path_factory.mktemp("helpers"))
    try:
        yield kept
    finally:
        kept.close()


@pytest.fixture
def helpers(request: pytest.FixtureRequest, spares: Spares) -> Iterator[dict[str, ServiceProcess]]:
    """The helper processes the test uses (of `HELPERS`), each fresh (`Spares`), stopped
    together at the end. The fixtures below wait for their own to answer."""
    started: dict[str, ServiceProcess] = {}
    try:
        for name in HELPERS:
            if name in request.fixturenames:
                started[name] = spares.take(name)
        yield started
    finally:
        for proc in started.values():
            proc.terminate()
        for proc in started.values():
            proc.stop()


@pytest.fixture
def simulator(helpers: dict[str, ServiceProcess]) -> ServiceProcess:
    proc = helpers["simulator"]
    proc.wait_healthy()
    return proc


@pytest.fixture
def order_contacts(helpers: dict[str, ServiceProcess]) -> OrderContacts:
    """The order service's contact endpoint (full ship-to for any order), in its own process."""
    helpers["order_contacts"].wait_healthy()
    return OrderContacts(helpers["order_contacts"])


@pytest.fixture
def supplier_with(database_url, settings_for, simulator, order_contacts):
    """Start a supplier service (quick dispatcher and SLA scans, reading ship-to from the
    contacts stand-in) with the given settings overridden: `async with supplier_with(...)`;
    a fresh database unless `database_url=` names one."""

    @contextlib.asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[Any]:
        port = free_port()
        url = overrides.pop("database_url", None) or await database_url("supplier")
        settings = settings_for(
            SupplierSettings,
            url,
            port=port,
            **{
                "dispatcher_poll_s": 0.2,
                "sla_scan_interval_s": 0.2,
                "order_url": order_contacts.url,
                **overrides,
            },
        )
        async with served(create_app, settings, port) as svc:
            await svc.runtime.bus.wait_connected()
            svc.simulator = simulator
            svc.order_contacts = order_contacts
            yield svc

    return start


@pytest.fixture
async def supplier(supplier_with):
    """The supplier service with quick, few retries and a breaker that stays open a minute."""
    async with supplier_with(
        supplier_timeout_s=1.0,
        supplier_backoff_s=0.05,
        supplier_max_attempts=3,
        breaker_cooldown_s=60,
    ) as svc:
        yield svc
