"""JSON logging with order id / event id / trace id context from context variables; never PII."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextvars import ContextVar

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

order_id_var: ContextVar[str | None] = ContextVar("order_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("event_id", default=None)
_service_name = "dropship"


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.service = _service_name
        record.order_id = order_id_var.get()
        record.event_id = event_id_var.get()
        span = trace.get_current_span().get_span_context()
        record.trace_id = f"{span.trace_id:032x}" if span.is_valid else None
        return True


def configure_logging(service: str, level: str = "INFO", json: bool = True) -> None:
    """Install one stderr handler on the root logger (idempotent)."""
    global _service_name
    _service_name = service
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if json:
        handler.setFormatter(
            JsonFormatter(
                "%(asctime)s %(levelname)s %(name)s %(message)s "
                "%(service)s %(order_id)s %(event_id)s %(trace_id)s",
                rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(service)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_dropship", False):
            root.removeHandler(old)
    handler._dropship = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


@contextlib.contextmanager
def log_context(*, order_id: str | None = None, event_id: str | None = None) -> Iterator[None]:
    """Bind order/event ids to every log record emitted inside the block."""
    tokens = []
    if order_id is not None:
        tokens.append((order_id_var, order_id_var.set(order_id)))
    if event_id is not None:
        tokens.append((event_id_var, event_id_var.set(event_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
