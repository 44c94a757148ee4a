"""Supplier service unit of work and repositories (suppliers, offers, supplier orders)."""

from __future__ import annotations

from services.supplier.directory import Credentials, Sealer, SupplierDirectory, SupplierEntry
from services.supplier.store.base import (
    ACTIVE_STATES,
    COUNTERS,
    FAILED_STATES,
    UNDECIDED_STATES,
    NewSupplierOrder,
    StockConflict,
)
from services.supplier.store.catalogue import CatalogueRepository
from services.supplier.store.orders import OrderRepository
from services.supplier.tables import metadata

__all__ = [
    "ACTIVE_STATES",
    "COUNTERS",
    "FAILED_STATES",
    "UNDECIDED_STATES",
    "Credentials",
    "NewSupplierOrder",
    "Sealer",
    "StockConflict",
    "SupplierDirectory",
    "SupplierEntry",
    "SupplierUnitOfWork",
    "metadata",
]


class SupplierUnitOfWork(CatalogueRepository, OrderRepository):
    """One transaction over the supplier service's database, with its repositories."""
