"""A service's runtime: engine, bus, outbox relay and consumers, built in the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Generic

from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from typing_extensions import TypeVar

from shared import faults, tracing
from shared.bodylimit import BodyLimit, BodyLimitMiddleware
from shared.bus import BusConfig, KafkaBus
from shared.consumer import (
    BatchHandler,
    ConsumerRunner,
    MessageProcessor,
    RetryingDelivery,
    Subscription,
)
from shared.db import create_engine, migrate_async, reachable, session_factory
from shared.http import (
    ERROR_RESPONSES,
    install_error_handlers,
    install_load_shedding,
    install_trace_middleware,
)
from shared.logging import configure_logging
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

U = TypeVar("U", bound=UnitOfWork)
S = TypeVar("S", bound=ServiceSettings, default=ServiceSettings, covariant=True)
"""The service's own settings class, so its routes read them typed, without a downcast."""

OUTBOX_BACKLOG = Gauge(
    "dropship_outbox_backlog", "Outbox rows committed but not yet published.", ["service"]
)


class ServiceRuntime(Generic[U, S]):
    """Everything with a lifetime: made in `start()`, torn down in `stop()`, never at import."""

    def __init__(
        self,
        settings: S,
        migrations_dir: Path,
        uow_class: Callable[..., U],
        handlers: Mapping[str, Subscription[U]] | None = None,
        background: Mapping[str, Callable[[ServiceRuntime[U, S]], Awaitable[None]]] | None = None,
        batch_handler: BatchHandler[U] | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.service_name
        self.migrations_dir = migrations_dir
        self._uow_class = uow_class
        self.handlers = dict(handlers or {})
        self.batch_handler = batch_handler
        self._background = dict(background or {})
        self._tasks: list[asyncio.Task[None]] = []
        self._relay_task: asyncio.Task[None] | None = None
        self.engine: AsyncEngine
        self.sessions: async_sessionmaker[AsyncSession]
        self.bus: KafkaBus
        self.relay: OutboxRelay
        self.consumer: ConsumerRunner | None = None
        self.tracing = tracing.Tracing(
            self.name,
            exporter=settings.otel_exporter,
            endpoint=settings.otel_endpoint,
            sample_ratio=settings.otel_sample_ratio,
        )

    def uow(self) -> U:
        return self._uow_class(
            self.sessions, on_commit=self.relay.wake, notify_others=lambda: not self.relay.leading
        )

    async def start(self) -> None:
        s = self.settings
        configure_logging(self.name, s.log_level, s.log_json)
        faults.arm(s.fault_points)
        self.tracing.start()
        self.engine = create_engine(s.db_url, pool_pre_ping=s.db_pool_pre_ping)
        self.sessions = session_factory(self.engine)
        if s.migrate_on_start:
            await migrate_async(self.migrations_dir, s.db_url)
        self.bus = KafkaBus(
            BusConfig(
                bootstrap=s.kafka_bootstrap,
                client_id=f"dropship-{self.name}",
                partitions=s.kafka_partitions,
                replication_factor=s.kafka_replication_factor,
                enable_idempotence=s.kafka_enable_idempotence,
                session_timeout_ms=s.kafka_session_timeout_ms,
                heartbeat_interval_ms=s.kafka_heartbeat_interval_ms,
                connect_backoff_max_s=s.kafka_connect_backoff_max_s,
                fetch_max_wait_ms=s.kafka_fetch_max_wait_ms,
                fetch_min_bytes=s.kafka_fetch_min_bytes,
                doorbell=s.kafka_doorbell,
                ring_every_s=s.kafka_idle_after_s / 4,
                linger_ms=s.kafka_producer_linger_ms,
                doorbell_wait_ms=s.kafka_doorbell_wait_ms,
                consumer_timeout_ms=s.kafka_consumer_timeout_ms,
            )
        )
        self.relay = OutboxRelay(
            self.name,
            self.engine,
            self.sessions,
            self.bus,
            batch_size=s.outbox_batch_size,
            poll_interval=s.outbox_poll_interval_s,
            idle_backoff=s.idle_poll_backoff,
            tracer=self.tracing,
            topic_sizes=self.bus.topic_sizes,
            hand_off=s.outbox_hand_off,
            linger=s.outbox_linger_ms / 1000,
            mark_delay=s.outbox_mark_delay_ms / 1000,
        )
        self._spawn("bus-connect", self.bus.connect, restart=False)
        if s.relay_enabled:
            self._relay_task = self._spawn("outbox-relay", self._run_relay)
        if self.handlers and s.consumers_enabled:
            processor = MessageProcessor(
                self.name,
                self.handlers,
                self.uow,
                batch_handler=self.batch_handler,
                tracer=self.tracing,
            )
            delivery = RetryingDelivery(
                processor,
                self.bus,
                max_attempts=s.consumer_max_attempts,
                backoff=s.consumer_retry_backoff_s,
                backoff_max=s.consumer_retry_backoff_max_s,
            )
            self.consumer = ConsumerRunner(
                self.bus,
                delivery,
                batch_size=s.consumer_batch_size,
                linger_ms=s.kafka_linger_ms,
                idle_after_s=s.kafka_idle_after_s,
                peek_s=s.kafka_idle_peek_s,
            )
            self._spawn("consumer", self.consumer.run)
        for name, job in self._background.items():
            self._spawn(name, lambda job=job: job(self))  # type: ignore[misc]
        log.info("service started", extra={"port": s.port})

    async def _run_relay(self) -> None:
        await self.bus.wait_connected()
        await self.relay.run()

    def _spawn(
        self, name: str, job: Callable[[], Awaitable[None]], restart: bool = True
    ) -> asyncio.Task[None]:
        async def supervised() -> None:
            while True:
                try:
                    await job()
                    if not restart:
                        return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("background task crashed, restarting", extra={"task": name})
                    await asyncio.sleep(1.0)

        task = asyncio.create_task(supervised(), name=f"{self.name}:{name}")
        self._tasks.append(task)
        return task

    async def stop(self, grace_s: float = 15.0) -> None:
        """Stop background work, then the producer and the engine; never hang shutdown.

        The relay stops first, while the rest still runs: on leaving it marks what it has
        published, and SQLite's write lock is then only ever held for a moment. A task
        cancelled mid-transaction may hold that lock until the engine is disposed, and the
        marks would wait for it (what is left unmarked goes out again at the next start).
        A task or step still running at its deadline is logged with where it waits.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        if self._relay_task is not None:
            self._relay_task.cancel()
            await asyncio.wait([self._relay_task], timeout=grace_s)
            self._relay_task = None
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            left = max(deadline - loop.time(), 1.0)
            _, stuck = await asyncio.wait(self._tasks, timeout=left)
            for task in stuck:
                log.error(
                    "background task %s did not stop in time; it waits at:\n%s",
                    task.get_name(),
                    _where(task),
                )
        self._tasks.clear()
        for step, closing in (
            ("producer", self.bus.close()),
            ("engine", self.engine.dispose()),
            ("tracing", asyncio.to_thread(self.tracing.shutdown)),
        ):
            closer = asyncio.ensure_future(closing)
            if (await asyncio.wait([closer], timeout=grace_s))[0]:
                closer.result()
                continue
            log.error("shutdown step %s timed out; it waits at:\n%s", step, _where(closer))
            closer.cancel()
            await asyncio.wait([closer], timeout=1.0)

    async def database_ok(self) -> bool:
        return await reachable(self.engine)

    async def readiness(self) -> dict[str, bool]:
        database, broker = await asyncio.gather(self.database_ok(), self.bus.healthy())
        return {"database": database, "broker": broker}

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        await self.start()
        time_gc()
        try:
            with (
                frozen_heap(self.settings.gc_freeze),
                young_threshold(self.settings.gc_young_threshold),
            ):
                yield
        finally:
            await self.stop()


def _where(task: asyncio.Task[Any]) -> str:
    """Where a task is suspended, through the coroutines it awaits, innermost call last (a
    stop that hangs says where; `Task.print_stack` shows only the outermost frame)."""
    frames: list[FrameType] = []
    awaited: Any = task.get_coro()
    while awaited is not None:
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if frame is None:
            break
        frames.append(frame)
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return "".join(traceback.StackSummary.extract((f, f.f_lineno) for f in frames).format())


GC_SECONDS = Counter(
    "dropship_gc_seconds_total",
    "Time in the garbage collector (the event loop stalls meanwhile), by generation.",
    ["generation"],
)
_gc_started: list[float] = []


def _time_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started[:] = [time.perf_counter()]
    elif _gc_started:
        GC_SECONDS.labels(str(info["generation"])).inc(time.perf_counter() - _gc_started[0])


def time_gc() -> None:
    """Count the collector's time in `dropship_gc_seconds_total` (once per process)."""
    if _time_gc not in gc.callbacks:
        gc.callbacks.append(_time_gc)


@contextlib.contextmanager
def frozen_heap(enabled: bool) -> Iterator[None]:
    """While serving, leave what startup built out of the collector's full scans (see
    `ServiceSettings.gc_freeze`), thawed on leaving. Freezing is a list splice, no scan;
    startup leaves next to no cyclic garbage (46 objects in the order service) to keep."""
    if not enabled:
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def young_threshold(objects: int) -> Iterator[None]:
    """While serving, run the collector's young pass every `objects` new container objects
    (see `ServiceSettings.gc_young_threshold`; 0: leave it), restored on leaving."""
    if not objects:
        yield
        return
    before = gc.get_threshold()
    gc.set_threshold(objects, *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)


def health_router(runtime: ServiceRuntime[Any]) -> APIRouter:
    router = APIRouter(tags=["health"])

    @router.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": runtime.name}

    @router.get("/readyz", summary="Readiness: database and broker reachable (503 otherwise)")
    async def readyz() -> JSONResponse:
        checks = await runtime.readiness()
        ok = all(checks.values())
        return JSONResponse(
            {"status": "ready" if ok else "not_ready", "checks": checks},
            status_code=200 if ok else 503,
        )

    @router.get("/metrics", summary="Prometheus exposition", include_in_schema=False)
    async def metrics() -> Response:
        with contextlib.suppress(Exception):
            OUTBOX_BACKLOG.labels(runtime.name).set(await runtime.relay.backlog())
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def build_app(runtime: ServiceRuntime[Any], *, title: str, description: str) -> FastAPI:
    """A FastAPI app wired to the runtime: lifespan, error shape, tracing, health routes."""
    app = FastAPI(
        title=title,
        description=description,
        version="0.1.0",
        lifespan=runtime.lifespan,
        responses=ERROR_RESPONSES,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    install_trace_middleware(app, runtime.tracing)
    # added last, so it runs first: a shed request costs no tracing and no handler
    settings = runtime.settings
    install_load_shedding(app, settings.max_inflight_requests, settings.shed_wait_s)
    app.add_middleware(  # outermost: a refused body costs no slot, no span, no handler
        BodyLimitMiddleware,
        default=settings.max_body_bytes,
        rules=(
            BodyLimit(settings.max_webhook_body_bytes, prefix="/v1/webhooks/"),
            BodyLimit(settings.max_import_body_bytes, suffix="/import"),
        ),
    )
    app.include_router(health_router(runtime))
    return app
