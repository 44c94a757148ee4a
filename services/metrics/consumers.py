"""Metrics consumers: every event type feeds the aggregates."""

from __future__ import annotations

from services.metrics.store import MetricsUnitOfWork
from shared.consumer import Handler
from shared.events import EVENT_TYPES, Envelope, EventData
from shared.uow import UnitOfWork


async def count(envelope: Envelope, data: EventData, uow: UnitOfWork) -> None:
    assert isinstance(uow, MetricsUnitOfWork)
    await uow.count_event(envelope.type)


HANDLERS: dict[str, Handler] = {topic: count for topic in EVENT_TYPES}
