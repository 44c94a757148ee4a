"""Order service handlers: they decide and return domain results; routes and consumers translate.

- `commands`: place, cancel, hold, release, re-address, redact, housekeeping (a unit of work each);
- `queries`: reads of orders, timelines and contact details;
- `events`: the supplier service's events applied to the order (consumer handlers);
- `webhooks`: what a marketplace delivery means, carried out once per delivery.
"""

from services.order.handlers.commands import (
    Idempotency,
    Placed,
    Replayed,
    accept_order,
    cancel_external,
    cancel_order,
    change_address,
    hold_order,
    place_order,
    purge_expired,
    redact_customer,
    release_order,
    rotate_pii,
)
from services.order.handlers.events import apply_event, apply_supply_event
from services.order.handlers.queries import contact, contacts, get_order, list_orders, timeline
from services.order.handlers.webhooks import (
    MarketplaceWebhook,
    WebhookOutcome,
    handle_marketplace_webhook,
)

__all__ = [
    "Idempotency",
    "MarketplaceWebhook",
    "Placed",
    "Replayed",
    "WebhookOutcome",
    "accept_order",
    "apply_event",
    "apply_supply_event",
    "cancel_external",
    "cancel_order",
    "change_address",
    "contact",
    "contacts",
    "get_order",
    "handle_marketplace_webhook",
    "hold_order",
    "list_orders",
    "place_order",
    "purge_expired",
    "redact_customer",
    "release_order",
    "rotate_pii",
    "timeline",
]
