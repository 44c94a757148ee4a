"""Metrics consumers: every event it keeps facts for; `apply_batch` writes a poll at once."""

from __future__ import annotations

from services.metrics.handlers import FACTS, apply_batch, apply_one
from services.metrics.store import MetricsUnitOfWork
from shared.consumer import BatchHandler, Subscription, on, subscriptions

CONSUMERS: dict[str, Subscription[MetricsUnitOfWork]] = subscriptions(
    *(on(model, apply_one) for model in FACTS)
)
"""Every event `FACTS` turns into rows (every order event); `apply_batch` does the work when
the consumer batches."""

BATCH: BatchHandler[MetricsUnitOfWork] = apply_batch
