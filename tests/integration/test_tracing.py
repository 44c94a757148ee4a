"""OpenTelemetry across HTTP and Kafka: one trace from the order request to consumers elsewhere.

Real broker, real databases, real HTTP; spans go to the SDK's in-memory exporter, and
for the exporter settings to a real OTLP/HTTP receiver run by the test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from services.order.app import create_app as order_app
from services.order.settings import OrderSettings
from services.supplier.app import create_app as supplier_app
from services.supplier.settings import SupplierSettings
from shared.events import Envelope
from shared.testing import eventually
from tests.support.data import API_KEY, order_body
from tests.support.kafka import consume
from tests.support.services import in_process, service_process

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_one_trace_links_the_order_request_to_consumers_in_other_services(
    database_url, settings_for
):
    spans = InMemorySpanExporter()
    async with (
        in_process(order_app, settings_for(OrderSettings, await database_url("order"))) as order,
        in_process(
            supplier_app, settings_for(SupplierSettings, await database_url("supplier"))
        ) as supplier,
    ):
        order.runtime.tracing.export_to(spans)
        supplier.runtime.tracing.export_to(spans)
        # no supplier offers this SKU: the supplier answers order-routing-failed (no_offer)
        response = await order.client.post(
            "/v1/orders",
            json=order_body(sku="NOBODY-SELLS-THIS"),
            headers={**API_KEY, "traceparent": CALLER},
        )
        assert response.status_code == 201, response.text
        order_id = response.json()["id"]

        async def needs_attention():
            got = await order.client.get(f"/v1/orders/{order_id}", headers=API_KEY)
            return got.json()["status"] == "needs_attention"

        await eventually(needs_attention, timeout=30, what="routing failure back at the order")

        async def chain():
            by_name = {
                (s.resource.attributes["service.name"], s.name): s
                for s in spans.get_finished_spans()
            }
            wanted = {
                ("order", "POST /v1/orders"),
                ("order", "order-placed publish"),
                ("supplier", "order-placed process"),
                ("supplier", "order-routing-failed publish"),
                ("order", "order-routing-failed process"),
            }
            return by_name if wanted <= set(by_name) else None

        found = await eventually(chain, timeout=15, what="every span of the chain")

    request = found["order", "POST /v1/orders"]
    placed = found["order", "order-placed publish"]
    routed = found["supplier", "order-placed process"]
    failed = found["supplier", "order-routing-failed publish"]
    back = found["order", "order-routing-failed process"]
    chain_spans = [request, placed, routed, failed, back]
    assert {f"{s.context.trace_id:032x}" for s in chain_spans} == {TRACE_ID}
    assert f"{request.parent.span_id:016x}" == CALLER.split("-")[2], "continues the caller"
    assert placed.parent.span_id == request.context.span_id
    assert routed.parent.span_id == request.context.span_id, "consumer is a child of the request"
    assert failed.parent.span_id == routed.context.span_id
    assert back.parent.span_id == routed.context.span_id
    assert [s.kind for s in chain_spans] == [
        SpanKind.SERVER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
        SpanKind.PRODUCER,
        SpanKind.CONSUMER,
    ]
    assert request.attributes["http.route"] == "/v1/orders"
    assert request.attributes["http.response.status_code"] == 201
    assert routed.attributes["messaging.destination.name"] == "order-placed"
    assert routed.attributes["messaging.consumer.group.name"] == "supplier"
    assert routed.attributes["dropship.order_id"] == order_id
    assert back.attributes["dropship.order_id"] == order_id


class _Collector:
    """A real OTLP/HTTP receiver: keeps every span it is sent, as (service, span name, trace id)."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, str, str]] = []
        self.requests = 0
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                collector.requests += 1
                for resource_spans in request.resource_spans:
                    service = next(
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    )
                    for scope_spans in resource_spans.scope_spans:
                        for span in scope_spans.spans:
                            collector.spans.append((service, span.name, span.trace_id.hex()))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def collector() -> Iterator[_Collector]:
    sink = _Collector()
    thread = threading.Thread(target=sink.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        sink.server.shutdown()
        sink.server.server_close()


async def _place_one_order(settings) -> Envelope:
    """Place an order with the caller's trace context; return the event as it reached the broker."""
    async with in_process(order_app, settings) as order:
        response = await order.client.post(
            "/v1/orders", json=order_body(), headers={**API_KEY, "traceparent": CALLER}
        )
        assert response.status_code == 201, response.text
        records = await consume(settings.kafka_bootstrap, "order-placed", 1)

        async def published():
            return order.runtime.relay.published_total >= 1  # its producer span has ended

        await eventually(published, what="the relay marking the row published")
    return Envelope.from_bytes(records[0].value)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_spans_go_to_the_configured_otlp_endpoint(database_url, settings_for, collector):
    settings = settings_for(
        OrderSettings,
        await database_url("order"),
        consumers_enabled=False,
        otel_exporter="otlp",
        otel_endpoint=collector.url,
    )
    envelope = await _place_one_order(settings)  # shutting down flushes the exporter
    assert ("order", "POST /v1/orders", TRACE_ID) in collector.spans
    assert ("order", "order-placed publish", TRACE_ID) in collector.spans
    assert envelope.traceparent is not None and envelope.traceparent.split("-")[1] == TRACE_ID


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_by_default_nothing_is_exported_but_the_trace_id_still_travels(
    database_url, settings_for, collector, monkeypatch
):
    # an OTLP endpoint in the environment is not enough: exporting is an explicit choice
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    settings = settings_for(OrderSettings, await database_url("order"), consumers_enabled=False)
    assert settings.otel_exporter == "none"
    envelope = await _place_one_order(settings)
    assert collector.requests == 0 and collector.spans == []
    assert envelope.traceparent is not None and envelope.traceparent.split("-")[1] == TRACE_ID


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_separate_processes_export_one_trace_to_the_collector(
    database_url, broker, collector, tmp_path
):
    """Configured by environment, as deployed: two uvicorn processes, one trace over OTLP."""
    common = {
        "DROPSHIP_ENVIRONMENT": "test",
        "DROPSHIP_DATA_DIR": str(tmp_path),
        "DROPSHIP_KAFKA_BOOTSTRAP": broker.bootstrap,
        "DROPSHIP_OTEL_EXPORTER": "otlp",
        "DROPSHIP_OTEL_ENDPOINT": collector.url,
        "DROPSHIP_LOG_JSON": "false",
    }
    order = service_process(
        "order", {**common, "DROPSHIP_ORDER_DATABASE_URL": await database_url("order")}, tmp_path
    )
    supplier = service_process(
        "supplier",
        {**common, "DROPSHIP_SUPPLIER_DATABASE_URL": await database_url("supplier")},
        tmp_path,
    )
    try:
        order.start()
        supplier.start()
        async with httpx.AsyncClient(base_url=order.url, timeout=10) as client:
            response = await client.post(
                "/v1/orders",
                json=order_body(sku="NOBODY-SELLS-THIS"),
                headers={**API_KEY, "traceparent": CALLER},
            )
            assert response.status_code == 201, response.text
            wanted = {
                ("order", "POST /v1/orders", TRACE_ID),
                ("order", "order-placed publish", TRACE_ID),
                ("supplier", "order-placed process", TRACE_ID),
                ("supplier", "order-routing-failed publish", TRACE_ID),
                ("order", "order-routing-failed process", TRACE_ID),
            }

            async def exported():
                return wanted <= set(collector.spans)

            await eventually(exported, timeout=45, what=f"{wanted} at the collector")
    finally:
        order.stop()
        supplier.stop()
