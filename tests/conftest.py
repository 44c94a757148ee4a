"""Fixtures: a real PostgreSQL cluster, a fresh tansu broker per test, per-service databases."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.db import migrate_async
from shared.infra import EmbeddedBroker, PostgresCluster, port_range
from tests.support.kafka import FETCH_WAITS_MS, GROUP_TIMING

ROOT = Path(__file__).resolve().parent.parent
_DIR_MARKERS = {"unit": "unit", "integration": "integration", "e2e": "e2e", "contract": "contract"}
# Services whose database `database_url` hands over migrated (from a template built once per
# test process): every one of them migrates at start, so the test sees the same schema
# without paying for the migrations (0.1-0.5 s per database) again.
_MIGRATIONS = {path.parent.name: path for path in sorted((ROOT / "services").glob("*/migrations"))}
_templates: dict[tuple[str, str], str] = {}  # (server or "sqlite", service) -> template
_template_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
    weakref.WeakKeyDictionary()
)


def pytest_configure(config: pytest.Config) -> None:
    """Settings every service the tests start shares (in this process or in its own):

    - Consumer group timing (`GROUP_TIMING`): the suite starts a service, and so a group
      join, hundreds of times. A test that sets either value keeps its own.
    - Fetch waits of the held-fetch consumers (`FETCH_WAITS_MS`): the suite waits for
      their hops one event at a time. A test that sets one keeps its own.
    - A parallel worker (pytest-xdist) takes its own slice of the ports `free_port` picks
      from, so servers two workers start at the same moment never ask for the same port.
    """
    for name, value in GROUP_TIMING.items():
        os.environ.setdefault(f"DROPSHIP_KAFKA_{name.upper()}", str(value))
    for service, wait_ms in FETCH_WAITS_MS.items():
        os.environ.setdefault(f"DROPSHIP_{service.upper()}_FETCH_MAX_WAIT_MS", str(wait_ms))
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...
    if worker:
        index, count = int(worker.removeprefix("gw")), int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
        low, high = port_range()
        size = (high - low) // count
        os.environ["DROPSHIP_PORT_RANGE"] = f"{low + index * size}-{low + (index + 1) * size}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test after the folder it lives in (tests/unit -> unit, ...)."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        if parts and parts[0] in _DIR_MARKERS:
            item.add_marker(getattr(pytest.mark, _DIR_MARKERS[parts[0]]))


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """asyncpg DSN of a PostgreSQL server: the one `make test` started, or our own."""
    url = os.environ.get("DROPSHIP_TEST_PG_URL")
    if url:
        server = url.replace("postgresql+asyncpg://", "postgresql://")
        yield server
        _drop_templates(server)
        return
    cluster = PostgresCluster().start()
    try:
        yield cluster.url(driver="postgresql")
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _template(server: str | None, service: str, folder: Path | None = None) -> str:
    """The migrated template of `service`'s database: a database name on `server`, or an
    SQLite file in `folder`. Built on first use and kept for the rest of the test process."""
    key = (server or "sqlite", service)
    lock = _template_locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    async with lock:
        if key in _templates:
            return _templates[key]
        if server is None:
            assert folder is not None, "an SQLite template needs a folder"
            path = folder / f"{service}.db"
            await migrate_async(_MIGRATIONS[service], f"sqlite+aiosqlite:///{path}")
            with closing(sqlite3.connect(path)) as conn:  # all in the main file, to copy it
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            _templates[key] = str(path)
        else:
            worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
            name = f"template_{worker}_{uuid.uuid4().hex[:8]}_{service}"
            await _create_database(server, name)
            await migrate_async(_MIGRATIONS[service], _asyncpg_url(server, name))
            _templates[key] = name
        return _templates[key]


async def _create_database(server: str, name: str, template: str | None = None) -> None:
    conn = await asyncpg.connect(server)
    try:
        suffix = f' TEMPLATE "{template}"' if template else ""
        await conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    finally:
        await conn.close()


def _asyncpg_url(server: str, name: str) -> str:
    base = server.rsplit("/", 1)[0]
    return f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"


async def _drop_databases(server: str, names: list[str]) -> None:
    conn = await asyncpg.connect(server)
    try:
        for name in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def _drop_templates(server: str) -> None:
    names = [name for (where, _), name in _templates.items() if where == server]
    if names:
        asyncio.run(_drop_databases(server, names))


@pytest.fixture
async def database_url(
    backend: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Any]]:
    """Factory: service name -> a fresh database URL on the test's backend.

    A service's database (`order`, `supplier`, ...) comes migrated to the newest revision,
    as the service would leave it on its first start; `empty=True`, or any other name,
    gives an empty database (a test of the migrations themselves wants that).
    """
    created: list[str] = []
    server = request.getfixturevalue("pg_server_url") if backend == "postgresql" else None

    async def make(service: str, *, empty: bool = False) -> str:
        migrated = not empty and service in _MIGRATIONS
        if server is None:
            path = tmp_path / (service + ".db")
            if migrated:
                folder = tmp_path_factory.getbasetemp() / "templates"
                folder.mkdir(exist_ok=True)
                shutil.copyfile(await _template(None, service, folder), path)
            return f"sqlite+aiosqlite:///{path}"
        name = f"t_{uuid.uuid4().hex[:12]}_{service}"
        template = await _template(server, service) if migrated else None
        await _create_database(server, name, template)
        created.append(name)
        return _asyncpg_url(server, name)

    yield make
    if server and created:
        await _drop_databases(server, created)


@pytest.fixture(scope="session")
def session_broker_bootstrap() -> Iterator[str]:
    """The broker `make test` started (shared by tests that need no isolation), or our own."""
    bootstrap = os.environ.get("DROPSHIP_TEST_KAFKA_BOOTSTRAP")
    if bootstrap:
        yield bootstrap
        return
    own = EmbeddedBroker().start()
    try:
        yield own.bootstrap
    finally:
        own.stop()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A fresh tansu broker per test, so no test sees another's topics or offsets."""
    b = EmbeddedBroker(log_path=tmp_path / "tansu.log").start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def settings_for(broker: EmbeddedBroker, tmp_path: Path) -> Callable[..., Any]:
    """Factory: settings class + database URL -> settings tuned for fast tests."""

    def make(cls: type[Any], database_url: str, **overrides: Any) -> Any:
        values: dict[str, Any] = {
            "environment": "test",
            "data_dir": tmp_path,
            "database_url": database_url,
            "kafka_bootstrap": broker.bootstrap,
            "consumer_retry_backoff_s": 0.05,
            "consumer_max_attempts": 3,
            "outbox_poll_interval_s": 0.5,
            "log_json": False,
        }
        values.update(overrides)
        return cls(**values)

    return make
