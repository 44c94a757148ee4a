"""Metrics consumers: every topic becomes facts; `apply_batch` writes a poll's worth at once."""

from __future__ import annotations

from services.metrics.handlers import apply_batch, apply_one
from services.metrics.store import MetricsUnitOfWork
from shared.consumer import BatchHandler, Subscription, on, subscriptions
from shared.events import EVENT_TYPES, OrderEvent

CONSUMERS: dict[str, Subscription[MetricsUnitOfWork]] = subscriptions(
    *(on(model, apply_one) for model in EVENT_TYPES.values() if issubclass(model, OrderEvent))
)
"""Every order event; `apply_batch` does the work when the consumer batches."""

BATCH: BatchHandler[MetricsUnitOfWork] = apply_batch
