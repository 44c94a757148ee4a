"""Order service repositories, one per table family, all bound to the unit of work's session.

Each takes `(session, dialect)`, never commits (the unit of work does), and speaks in
domain objects or small frozen records:

- `OrderRepository` (`uow.orders`): Order aggregates, PII encrypted at rest (`orders`,
  with the row mapping in `rows`), and `CustomerContact`s read many at once;
- `Timeline` (`uow.timeline`): every event that touched an order;
- `IdempotencyKeys` (`uow.idempotency`): `Idempotency-Key`s and their first result;
- `WebhookDeliveries` (`uow.webhooks`): marketplace delivery ids already processed.
"""

from services.order.repository.deliveries import WebhookDeliveries
from services.order.repository.idempotency import IdempotencyKeys, StoredResult
from services.order.repository.orders import OrderFilter, OrderRepository
from services.order.repository.rows import CustomerContact
from services.order.repository.timeline import Timeline, TimelineEntry

__all__ = [
    "CustomerContact",
    "IdempotencyKeys",
    "OrderFilter",
    "OrderRepository",
    "StoredResult",
    "Timeline",
    "TimelineEntry",
    "WebhookDeliveries",
]
