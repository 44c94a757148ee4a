"""Idempotent consumers: topic -> envelope -> inbox check -> handler, with retries and a DLQ.

Error tree (what a handler may raise):

- `PermanentError` and `InvalidEvent` (bad JSON, bad envelope, schema-invalid data):
  the message can never succeed; it goes to `<topic>.dlq` at once.
- an infrastructure failure (the database unreachable or restarting, a dropped
  connection: `is_infrastructure_failure`) is not the message's fault: the partition
  pauses and retries without limit, never dead-lettering and using up no attempts.
- any other exception is treated as transient: retried with jittered exponential
  backoff up to `max_attempts`, then dead-lettered.

Offsets are committed only after the handler's transaction (state + outbox + inbox
row) has committed, so a crash re-delivers and the inbox turns the repeat into a no-op.
"""

from shared.consumer.delivery import Record, RetryingDelivery
from shared.consumer.processor import (
    BatchHandler,
    Handler,
    MessageProcessor,
    PermanentError,
    Subscription,
    event_span,
    on,
    subscriptions,
)
from shared.consumer.runner import ConsumerRunner
from shared.failures import DLQ_HEADER_PREFIX, dead_letter_headers

__all__ = [
    "DLQ_HEADER_PREFIX",
    "BatchHandler",
    "ConsumerRunner",
    "Handler",
    "MessageProcessor",
    "PermanentError",
    "Record",
    "RetryingDelivery",
    "Subscription",
    "dead_letter_headers",
    "event_span",
    "on",
    "subscriptions",
]
