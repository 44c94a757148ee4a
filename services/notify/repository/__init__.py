"""Notify repositories on the unit of work; each returns records from `domain`, never rows."""

from services.notify.repository.alerts import Alerts
from services.notify.repository.complaints import ComplaintWatches
from services.notify.repository.facts import DlqDepths, OrderFacts, SupplierWatches
from services.notify.repository.notifications import Notifications
from services.notify.repository.waiting import WaitingWatches

__all__ = [
    "Alerts",
    "ComplaintWatches",
    "DlqDepths",
    "Notifications",
    "OrderFacts",
    "SupplierWatches",
    "WaitingWatches",
]
