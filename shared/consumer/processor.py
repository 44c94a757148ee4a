"""Messages into handlers: subscriptions, envelope validation, the inbox, one transaction."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Generic, TypeVar

from opentelemetry.trace import Span, SpanKind
from opentelemetry.util.types import AttributeValue

from shared import tracing
from shared.events import Envelope, EventData, InvalidEvent
from shared.logging import log_context
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

E = TypeVar("E", bound=EventData)
U = TypeVar("U", bound=UnitOfWork)

Handler = Callable[[Envelope, E, U], Awaitable[None]]
"""A typed event handler: `async def h(envelope, event: OrderPlaced, uow: MyUnitOfWork)`."""

BatchHandler = Callable[[Sequence[tuple[Envelope, EventData]], U], Awaitable[None]]
"""Applies the fresh events of one batch at once (set-based writes); see `MessageProcessor`."""

_BATCH_SPANS: ContextVar[Mapping[str, Span] | None] = ContextVar(
    "dropship_batch_spans", default=None
)


@contextlib.contextmanager
def event_span(envelope: Envelope) -> Iterator[None]:
    """Inside a batch handler: `envelope`'s consumer span is current, so the events emitted
    for it continue its trace (as they do under a one-event handler); elsewhere nothing."""
    spans = _BATCH_SPANS.get()
    if spans is None:
        yield
        return
    with tracing.resumed(spans.get(envelope.id), envelope.traceparent):
        yield


@dataclass(frozen=True)
class Subscription(Generic[U]):
    """One topic wired to its handler; made by `on()`, which checks the types once."""

    topic: str
    model: type[EventData]
    apply: Callable[[Envelope, EventData, U], Awaitable[None]]


def on(model: type[E], handler: Callable[[Envelope, E, U], Awaitable[None]]) -> Subscription[U]:
    """Subscribe `handler` to the topic of `model`; the handler receives that model, typed.

    The topic is the model's `event_type`, so a handler can never be wired to a topic
    whose payload it does not understand.
    """

    async def apply(envelope: Envelope, data: EventData, uow: U) -> None:
        if not isinstance(data, model):  # the envelope's type picked another model
            raise InvalidEvent(f"{envelope.type} carries {type(data).__name__}, not {model}")
        await handler(envelope, data, uow)

    return Subscription(model.event_type, model, apply)


def subscriptions(*subs: Subscription[U]) -> dict[str, Subscription[U]]:
    """A service's consumer table, topic -> subscription; one subscription per topic."""
    table: dict[str, Subscription[U]] = {}
    for sub in subs:
        if sub.topic in table:
            raise ValueError(f"two handlers for topic {sub.topic!r}")
        table[sub.topic] = sub
    return table


class PermanentError(Exception):
    """Raised by a handler for a message that will never succeed: dead-letter it now."""


_Apply = Callable[[Envelope, EventData, U], Awaitable[None]]


class MessageProcessor(Generic[U]):
    """Runs messages through envelope validation, the inbox and their handler.

    `handlers` is the service's consumer table (`subscriptions(on(Model, handler), ...)`).
    A batch is claimed in the inbox with one statement. With a `batch_handler` its fresh
    events go to that one call (in order), for consumers that write set-based; `handlers`
    then only name the topics.
    """

    def __init__(
        self,
        group: str,
        handlers: Mapping[str, Subscription[U]],
        uow_factory: Callable[[], U],
        batch_handler: BatchHandler[U] | None = None,
        tracer: tracing.Tracing | None = None,
    ) -> None:
        self.group = group
        self.handlers = dict(handlers)
        self.uow_factory = uow_factory
        self.batch_handler = batch_handler
        self.tracer = tracer or tracing.DISABLED

    def _parse(self, topic: str, raw: bytes | None) -> tuple[Envelope, EventData, _Apply[U]]:
        envelope = Envelope.from_bytes(raw)
        if envelope.type != topic:
            raise InvalidEvent(f"event type {envelope.type!r} does not belong on topic {topic!r}")
        data = envelope.payload()
        sub = self.handlers.get(topic)
        if sub is None:
            raise PermanentError(f"no handler for topic {topic!r} in group {self.group!r}")
        return envelope, data, sub.apply

    async def process(self, topic: str, raw: bytes | None) -> bool:
        """Apply one message once; returns False when it was a duplicate."""
        return (await self.process_many([(topic, raw)]))[0]

    async def process_many(self, messages: Sequence[tuple[str, bytes | None]]) -> list[bool]:
        """Apply messages in order in ONE transaction; all or nothing.

        Returns, per message, whether it was new (False: a duplicate). Any error rolls
        the whole batch back; the caller then retries message by message.
        """
        parsed = [self._parse(topic, raw) for topic, raw in messages]
        if self.batch_handler is not None:
            return await self._process_batch(parsed, self.batch_handler)
        async with self.uow_factory() as uow:
            # one statement claims the whole batch (a round trip per message before)
            fresh = await uow.claim_many(self.group, [envelope for envelope, _, _ in parsed])
            for (envelope, data, handler), new in zip(parsed, fresh, strict=True):
                with (
                    self._span(envelope) as span,
                    log_context(order_id=envelope.subject, event_id=envelope.id),
                ):
                    if not new:
                        span.set_attribute("dropship.duplicate", True)
                        continue
                    await handler(envelope, data, uow)
            await uow.commit()
        return fresh

    async def _process_batch(
        self,
        parsed: Sequence[tuple[Envelope, EventData, _Apply[U]]],
        batch_handler: BatchHandler[U],
    ) -> list[bool]:
        by_event = (
            {
                envelope.id: span
                for envelope, _, _ in parsed
                if (span := self.tracer.start_span(*self._span_args(envelope))) is not None
            }
            if self.tracer.recording  # else no span: not even their attributes are built
            else {}
        )
        scope = _BATCH_SPANS.set(by_event)
        try:
            with tracing.ending(list(by_event.values())):
                async with self.uow_factory() as uow:
                    envelopes = [envelope for envelope, _, _ in parsed]
                    fresh = await uow.claim_many(self.group, envelopes)
                    todo = [(e, d) for (e, d, _), new in zip(parsed, fresh, strict=True) if new]
                    if todo:
                        await batch_handler(todo, uow)
                    await uow.commit()
        finally:
            _BATCH_SPANS.reset(scope)
        return fresh

    def _span(self, envelope: Envelope) -> contextlib.AbstractContextManager[Span]:
        """The consumer span of one event, a child of the context its envelope carries."""
        return self.tracer.span(*self._span_args(envelope))

    def _span_args(
        self, envelope: Envelope
    ) -> tuple[str, SpanKind, str | None, dict[str, AttributeValue]]:
        return (
            f"{envelope.type} process",
            SpanKind.CONSUMER,
            envelope.traceparent,
            {
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": envelope.type,
                "messaging.consumer.group.name": self.group,
                "messaging.message.id": envelope.id,
                "dropship.order_id": envelope.subject,
            },
        )
