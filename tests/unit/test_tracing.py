"""Trace context without I/O: ids flow when nothing is recorded, spans nest when something is."""

from __future__ import annotations

import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared import tracing

CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_without_an_exporter_ids_still_flow_from_the_caller():
    tracer = tracing.Tracing("order")
    assert tracing.current() is None
    with tracer.span("GET", SpanKind.SERVER, CALLER) as span:
        assert not span.is_recording()
        inside = tracing.current()
        assert inside is not None and tracing.is_valid(inside)
        assert inside.split("-")[1] == CALLER.split("-")[1], "the caller's trace continues"
        assert inside.split("-")[2] != CALLER.split("-")[2], "under a span of our own"
        assert tracing.for_event() == inside
    assert tracing.current() is None
    assert tracer.start_span("x", SpanKind.PRODUCER, CALLER) is None


def test_without_a_parent_a_new_trace_starts_each_time():
    tracer = tracing.Tracing("order")
    with tracer.span("GET", SpanKind.SERVER, None):
        first = tracing.current()
    with tracer.span("GET", SpanKind.SERVER, "00-garbage"):
        second = tracing.current()
    assert first and second and first.split("-")[1] != second.split("-")[1]
    assert tracing.is_valid(tracing.for_event()), "an event emitted outside any span gets a root"


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
    ],
)
def test_an_invalid_traceparent_names_no_parent(bad):
    assert tracing.parse_traceparent(bad) is None


def test_recorded_spans_nest_under_the_caller_and_each_other():
    exporter = InMemorySpanExporter()
    tracer = tracing.Tracing("supplier")
    tracer.export_to(exporter)
    with tracer.span("order-placed process", SpanKind.CONSUMER, CALLER, {"a": 1}) as consumer:
        assert consumer.is_recording()
        emitted = tracing.for_event()
    producer = tracer.start_span("supplier-confirmed publish", SpanKind.PRODUCER, emitted)
    assert producer is not None
    producer.end()
    tracer.shutdown()

    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"order-placed process", "supplier-confirmed publish"}
    process, publish = spans["order-placed process"], spans["supplier-confirmed publish"]
    assert f"{process.context.trace_id:032x}" == CALLER.split("-")[1]
    assert publish.context.trace_id == process.context.trace_id
    assert process.parent is not None and f"{process.parent.span_id:016x}" == CALLER.split("-")[2]
    assert publish.parent is not None and publish.parent.span_id == process.context.span_id
    assert process.kind is SpanKind.CONSUMER and publish.kind is SpanKind.PRODUCER
    assert process.resource.attributes["service.name"] == "supplier"
    assert emitted == tracing.format_traceparent(process.context)


def test_an_unsampled_caller_is_not_recorded():
    exporter = InMemorySpanExporter()
    tracer = tracing.Tracing("order")
    tracer.export_to(exporter)
    with tracer.span("GET", SpanKind.SERVER, CALLER[:-2] + "00") as span:
        assert not span.is_recording()
    tracer.shutdown()
    assert exporter.get_finished_spans() == ()


def test_the_endpoint_is_a_collector_base_url():
    assert tracing._traces_url("http://otel:4318") == "http://otel:4318/v1/traces"
    assert tracing._traces_url("http://otel:4318/v1/traces") == "http://otel:4318/v1/traces"
    assert tracing._traces_url(None) is None


def test_log_records_carry_the_trace_id_of_the_span_they_are_written_in():
    from shared.logging import _ContextFilter

    def trace_id_of_a_record() -> str | None:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", None, None)
        _ContextFilter().filter(record)
        return record.trace_id

    with tracing.Tracing("order").span("GET", SpanKind.SERVER, CALLER):
        assert trace_id_of_a_record() == CALLER.split("-")[1]
    assert trace_id_of_a_record() is None


def test_calls_to_other_services_continue_the_current_trace():
    assert tracing.outgoing_headers() == {}
    with tracing.Tracing("notify").span("shipment-delayed process", SpanKind.CONSUMER, CALLER):
        headers = tracing.outgoing_headers()
        assert headers == {"traceparent": tracing.current()}
    assert headers["traceparent"].split("-")[1] == CALLER.split("-")[1]
