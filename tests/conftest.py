"""Fixtures: a real PostgreSQL cluster, a fresh tansu broker per test, per-service databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from shared.infra import EmbeddedBroker, PostgresCluster, port_range
from tests.support.kafka import GROUP_TIMING

ROOT = Path(__file__).resolve().parent.parent
_DIR_MARKERS = {"unit": "unit", "integration": "integration", "e2e": "e2e", "contract": "contract"}


def pytest_configure(config: pytest.Config) -> None:
    """Settings every service the tests start shares (in this process or in its own):

    - Consumer group timing (`GROUP_TIMING`): the suite starts a service, and so a group
      join, hundreds of times. A test that sets either value keeps its own.
    - A parallel worker (pytest-xdist) takes its own slice of the ports `free_port` picks
      from, so servers two workers start at the same moment never ask for the same port.
    """
    for name, value in GROUP_TIMING.items():
        os.environ.setdefault(f"DROPSHIP_KAFKA_{name.upper()}", str(value))
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
        yield url.replace("postgresql+asyncpg://", "postgresql://")
        return
    cluster = PostgresCluster().start()
    try:
        yield cluster.url(driver="postgresql")
    finally:
        cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Callable[[str], Any]]:
    """Factory: service name -> a fresh, empty database URL on the test's backend."""
    created: list[str] = []
    server = request.getfixturevalue("pg_server_url") if backend == "postgresql" else None

    async def make(service: str) -> str:
        if server is None:
            return f"sqlite+aiosqlite:///{tmp_path / (service + '.db')}"
        name = f"t_{uuid.uuid4().hex[:12]}_{service}"
        conn = await asyncpg.connect(server)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        created.append(name)
        base = server.rsplit("/", 1)[0]
        return f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"

    yield make
    if server and created:
        conn = await asyncpg.connect(server)
        try:
            for name in created:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


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
