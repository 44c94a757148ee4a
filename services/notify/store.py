"""Notify service tables and unit of work."""

from __future__ import annotations

from shared.db import new_metadata
from shared.uow import UnitOfWork

metadata = new_metadata()


class NotifyUnitOfWork(UnitOfWork):
    """Platform tables only for now; the notification log arrives with the notify issue."""
