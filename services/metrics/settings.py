"""Typed settings of the metrics service."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from shared.settings import ServiceSettings, held_fetch_max_wait_ms, held_fetch_min_bytes


class MetricsSettings(ServiceSettings):
    service_name: ClassVar[str] = "metrics"
    default_port: ClassVar[int] = 8004

    database_url: str | None = Field(None, validation_alias="DROPSHIP_METRICS_DATABASE_URL")
    port: int | None = Field(None, validation_alias="DROPSHIP_METRICS_PORT")
    consumer_batch_size: int = Field(
        2000, ge=1, validation_alias="DROPSHIP_METRICS_CONSUMER_BATCH_SIZE"
    )
    """Events applied per transaction (a whole poll across partitions): facts are written
    set-based and the rollup deltas summed per row first, so a larger batch costs less per
    event (2000: about a fifth less CPU than 500)."""
    kafka_linger_ms: float = Field(
        1000.0, ge=0, le=5000, validation_alias="DROPSHIP_METRICS_CONSUMER_LINGER_MS"
    )
    """After a poll returns fewer than a batch, keep fetching up to this long for more
    before applying them in one transaction (a fetch wait that brings nothing ends it
    sooner): KPIs need not be real-time, and at a low rate a poll holds one event, so the
    transaction's fixed cost is shared by all that came meanwhile."""
    kafka_fetch_max_wait_ms: int = held_fetch_max_wait_ms(
        "DROPSHIP_METRICS_FETCH_MAX_WAIT_MS", 1000
    )
    """How long the broker may hold the metrics consumer's fetch while nothing has arrived
    (the supplier's: `DROPSHIP_KAFKA_FETCH_MAX_WAIT_MS`, 100; order and notify: 500): fewer
    fetches, each of every assigned partition; a wait that brings nothing ends the linger."""
    kafka_fetch_min_bytes: int = held_fetch_min_bytes("DROPSHIP_METRICS_FETCH_MIN_BYTES")
    """The broker holds the metrics consumer's fetch until this much has arrived or its
    wait is up (`DROPSHIP_METRICS_FETCH_MAX_WAIT_MS`): a trickle of events costs one fetch
    per wait, not one each (1: answered at the first event)."""
    kpi_cache_s: float = Field(5.0, ge=0, validation_alias="DROPSHIP_METRICS_KPI_CACHE_S")
    """Seconds a window's facts are reused by KPI requests (0: load on every request)."""
