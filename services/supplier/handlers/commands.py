"""The admin API's commands and queries: suppliers, offers (JSON, CSV), allocations, scorecards."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.supplier.csv_import import parse_offers
from services.supplier.domain import (
    InvalidCsv,
    NewSupplier,
    Offer,
    OfferNotFound,
    Scorecard,
    Supplier,
    SupplierChanges,
    SupplierKeyTaken,
    SupplierNotFound,
    check_offers,
)
from services.supplier.domain.quality import Chargeback
from services.supplier.store import AllocationView, SupplierUnitOfWork


async def _existing(uow: SupplierUnitOfWork, supplier_id: str) -> Supplier:
    found = await uow.suppliers.get(supplier_id)
    if found is None:
        raise SupplierNotFound(supplier_id)
    return found


async def register_supplier(uow: SupplierUnitOfWork, new: NewSupplier) -> Supplier:
    async with uow:
        taken = await uow.suppliers.id_for_key(new.supplier_key)
        if taken is not None:
            raise SupplierKeyTaken(new.supplier_key, taken)
        supplier_id = f"sup_{uuid.uuid4().hex[:16]}"
        await uow.suppliers.add(supplier_id, new, datetime.now(UTC))
        await uow.commit()
    uow.suppliers.forget(supplier_id)
    return await get_supplier(uow, supplier_id)


async def get_supplier(uow: SupplierUnitOfWork, supplier_id: str) -> Supplier:
    async with uow:
        return await _existing(uow, supplier_id)


async def list_suppliers(uow: SupplierUnitOfWork) -> list[Supplier]:
    async with uow:
        return await uow.suppliers.list()


async def change_supplier(
    uow: SupplierUnitOfWork, supplier_id: str, changes: SupplierChanges
) -> Supplier:
    async with uow:
        await _existing(uow, supplier_id)
        await uow.suppliers.change(supplier_id, changes, datetime.now(UTC))
        await uow.commit()
    uow.suppliers.forget(supplier_id)
    return await get_supplier(uow, supplier_id)


async def upsert_offers(uow: SupplierUnitOfWork, supplier_id: str, offers: list[Offer]) -> int:
    """Insert or replace the supplier's offers by SKU; offers not named are kept."""
    check_offers(offers)
    async with uow:
        await _existing(uow, supplier_id)
        await uow.offers.upsert(offers)
        await uow.commit()
    return len(offers)


async def list_offers(uow: SupplierUnitOfWork, supplier_id: str) -> list[Offer]:
    async with uow:
        await _existing(uow, supplier_id)
        return await uow.offers.of_supplier(supplier_id)


async def delete_offer(uow: SupplierUnitOfWork, supplier_id: str, sku: str) -> None:
    async with uow:
        if not await uow.offers.delete(supplier_id, sku):
            raise OfferNotFound(supplier_id, sku)
        await uow.commit()


async def import_offers(uow: SupplierUnitOfWork, raw: bytes) -> int:
    """An offer file: every row is checked and nothing is imported if one is bad."""
    async with uow:
        parsed = parse_offers(raw, await uow.suppliers.ids())
        if parsed.problems:
            raise InvalidCsv(parsed.summary, [p.as_detail() for p in parsed.problems])
        await uow.offers.upsert(parsed.offers)
        await uow.commit()
    return len(parsed.offers)


async def allocations(uow: SupplierUnitOfWork, order_id: str) -> list[AllocationView]:
    async with uow:
        return await uow.supplier_orders.allocations(order_id)


async def scorecard(uow: SupplierUnitOfWork, supplier_id: str) -> Scorecard:
    async with uow:
        await _existing(uow, supplier_id)
        counts = (await uow.suppliers.counters([supplier_id]))[supplier_id]
        confirm_seconds = await uow.supplier_orders.confirm_seconds(supplier_id)
        orders = await uow.supplier_orders.count_for(supplier_id)
        quality = await uow.quality.tally(supplier_id)
        chargebacks = await uow.quality.chargeback_tally(supplier_id)
    return Scorecard.measure(supplier_id, orders, counts, confirm_seconds, quality, chargebacks)


async def chargebacks(
    uow: SupplierUnitOfWork, supplier_id: str, limit: int, after: tuple[datetime, str] | None
) -> list[Chargeback]:
    """The supplier's chargebacks, newest first."""
    async with uow:
        await _existing(uow, supplier_id)
        return await uow.quality.chargebacks(supplier_id, limit, after)
