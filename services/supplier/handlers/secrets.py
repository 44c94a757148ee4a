"""Secrets at rest: supplier credentials sealed again under the active PII key."""

from __future__ import annotations

from services.supplier.store import SupplierUnitOfWork


async def rotate_credentials(uow: SupplierUnitOfWork) -> tuple[int, int]:
    """Re-seal every supplier's credentials under the active key; returns (changed, still
    stale). Safe to run again and alongside the running service."""
    async with uow:
        changed = await uow.suppliers.reseal_stale()
        await uow.commit()
    async with uow:
        remaining = await uow.suppliers.count_stale()
    return changed, remaining
