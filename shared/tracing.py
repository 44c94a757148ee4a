"""Tracing: W3C trace context from HTTP requests into event envelopes and out of consumers.

Every HTTP request (server span), outbox publish (producer span) and consumed event
(consumer span) runs inside an OpenTelemetry span. The context travels in the
envelope's `traceparent` (DESIGN §2), so one trace links the request that placed an
order to the consumers of its events in every service.

Export is off by default (`DROPSHIP_OTEL_EXPORTER=none`): spans are then not
recorded, but trace and span ids are still made and carried, so a caller's trace id
survives every hop at the cost of a few microseconds. `console` prints spans;
`otlp` sends them over OTLP/HTTP to `DROPSHIP_OTEL_ENDPOINT` (a collector's base
URL) or, when unset, where the standard `OTEL_EXPORTER_OTLP_*` variables say.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
)
from opentelemetry.util.types import AttributeValue

log = logging.getLogger(__name__)

Exporter = Literal["none", "console", "otlp"]
Attributes = Mapping[str, AttributeValue]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def new_traceparent(parent: str | None = None) -> str:
    """A child span of `parent` (same trace id, new span id), or the root of a new trace."""
    match = _TRACEPARENT.match(parent or "")
    trace_id = match.group(1) if match else secrets.token_hex(16)
    flags = match.group(3) if match else "01"
    return f"00-{trace_id}-{secrets.token_hex(8)}-{flags}"


def is_valid(traceparent: str | None) -> bool:
    return bool(traceparent and _TRACEPARENT.match(traceparent))


def format_traceparent(span_context: SpanContext) -> str:
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}"
        f"-{int(span_context.trace_flags):02x}"
    )


def parse_traceparent(traceparent: str | None) -> SpanContext | None:
    """The remote span context a valid `traceparent` names, else None."""
    match = _TRACEPARENT.match(traceparent or "")
    if not match or set(match.group(1)) == {"0"} or set(match.group(2)) == {"0"}:
        return None
    return SpanContext(
        trace_id=int(match.group(1), 16),
        span_id=int(match.group(2), 16),
        is_remote=True,
        trace_flags=TraceFlags(int(match.group(3), 16)),
    )


def current() -> str | None:
    """The `traceparent` of the span running now (None outside any span)."""
    span_context = trace.get_current_span().get_span_context()
    return format_traceparent(span_context) if span_context.is_valid else None


def for_event() -> str:
    """The `traceparent` to put in an event emitted now: the current span, or a new trace."""
    return current() or new_traceparent()


def outgoing_headers() -> dict[str, str]:
    """Headers that continue the current trace in a service this one calls over HTTP."""
    traceparent = current()
    return {"traceparent": traceparent} if traceparent else {}


def _parent_context(traceparent: str | None) -> Context:
    """A context whose parent is `traceparent`, or an empty one (a new trace)."""
    remote = parse_traceparent(traceparent)
    return Context() if remote is None else trace.set_span_in_context(NonRecordingSpan(remote))


def _unrecorded_child(traceparent: str | None) -> NonRecordingSpan:
    """A span that is not recorded but has real ids: the parent's trace, a new span id."""
    remote = parse_traceparent(traceparent)
    trace_id = remote.trace_id if remote else secrets.randbits(128) or 1
    flags = remote.trace_flags if remote else _SAMPLED
    span_id = secrets.randbits(64) or 1
    return NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False, trace_flags=flags))


@contextlib.contextmanager
def ending(spans: Sequence[Span]) -> Iterator[None]:
    """End spans made by `Tracing.start_span` after the block, each marked with its error."""
    try:
        yield
    except Exception as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR)
        raise
    finally:
        for span in spans:
            span.end()


@contextlib.contextmanager
def resumed(span: Span | None, parent: str | None) -> Iterator[None]:
    """Make a span made by `Tracing.start_span` current for the block (it stays open); with
    none (nothing recorded), an unrecorded child of `parent`, so the ids still travel."""
    current_span = span if span is not None else _unrecorded_child(parent)
    with trace.use_span(current_span, record_exception=False, set_status_on_exception=False):
        yield


class Tracing:
    """One service's tracer: spans for requests, publishes and consumed events.

    Made inert by the runtime's constructor; `start()` builds the exporter from the
    settings, `shutdown()` flushes it. Without an exporter nothing is recorded.
    """

    def __init__(
        self,
        service: str,
        *,
        exporter: Exporter = "none",
        endpoint: str | None = None,
        sample_ratio: float = 1.0,
    ) -> None:
        self.service = service
        self.exporter = exporter
        self.endpoint = endpoint
        self.sample_ratio = sample_ratio
        self.provider: TracerProvider | None = None
        self._tracer: trace.Tracer | None = None

    @property
    def recording(self) -> bool:
        return self._tracer is not None

    def start(self) -> None:
        """Build the configured exporter (nothing for `none`)."""
        if self.exporter == "none" or self.provider is not None:
            return
        exporter: SpanExporter
        if self.exporter == "console":
            exporter = ConsoleSpanExporter(service_name=self.service)
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=_traces_url(self.endpoint))
        self.export_to(exporter, batch=True)
        log.info("tracing exports spans", extra={"exporter": self.exporter})

    def export_to(self, exporter: SpanExporter, *, batch: bool = False) -> None:
        """Also send every finished span to `exporter` (a test's in-memory one, say)."""
        if self.provider is None:
            self.provider = TracerProvider(
                resource=Resource.create(
                    {"service.name": self.service, "service.namespace": "dropship"}
                ),
                sampler=ParentBased(TraceIdRatioBased(self.sample_ratio)),
            )
            self._tracer = self.provider.get_tracer("dropship")
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)

    def shutdown(self) -> None:
        """Flush and stop the exporters (blocking: call it off the event loop)."""
        provider, self.provider, self._tracer = self.provider, None, None
        if provider is not None:
            provider.shutdown()

    @contextlib.contextmanager
    def span(
        self,
        name: str,
        kind: SpanKind,
        parent: str | None,
        attributes: Attributes | None = None,
    ) -> Iterator[Span]:
        """Run the block in a new current span, a child of `parent` (a traceparent) or a root."""
        if self._tracer is None:
            span: Span = _unrecorded_child(parent)
            token = otel_context.attach(trace.set_span_in_context(span, Context()))
            try:
                yield span
            finally:
                otel_context.detach(token)
            return
        with self._tracer.start_as_current_span(
            name, context=_parent_context(parent), kind=kind, attributes=attributes
        ) as recorded:
            yield recorded

    def start_span(
        self, name: str, kind: SpanKind, parent: str | None, attributes: Attributes | None = None
    ) -> Span | None:
        """A recorded span the caller ends (None when not recording): for batched work."""
        if self._tracer is None:
            return None
        return self._tracer.start_span(
            name, context=_parent_context(parent), kind=kind, attributes=attributes
        )


def _traces_url(endpoint: str | None) -> str | None:
    """`http://collector:4318` -> `http://collector:4318/v1/traces`; None: the OTEL_* defaults."""
    if not endpoint:
        return None
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else base + "/v1/traces"


DISABLED = Tracing("dropship")
"""An inert tracer for code run outside a service runtime (unit tests, tools)."""
