"""The supplier directory keeps a read only if no invalidation came while it was made."""

from __future__ import annotations

from types import SimpleNamespace

from services.supplier.store import Sealer, SupplierDirectory


def row(supplier_id: str, priority: int) -> SimpleNamespace:
    return SimpleNamespace(
        id=supplier_id,
        supplier_key=supplier_id,
        api_base_url="http://sim",
        credentials=None,
        priority=priority,
        ship_sla_hours=48,
        active=True,
        rate_limit_per_s=None,
    )


def test_a_read_begun_in_the_current_generation_is_kept() -> None:
    directory = SupplierDirectory(Sealer(str, str), ttl_s=60)
    began = directory.generation
    directory.remember("sup_a", row("sup_a", 3), {}, read_in=began)  # type: ignore[arg-type]
    hit, entry = directory.cached("sup_a")
    assert hit and entry is not None and entry.priority == 3


def test_a_read_begun_before_an_invalidation_is_returned_but_not_kept() -> None:
    directory = SupplierDirectory(Sealer(str, str), ttl_s=60)
    began = directory.generation
    directory.invalidate("sup_a")  # a change committed while the row was being read
    entry = directory.remember("sup_a", row("sup_a", 3), {}, read_in=began)  # type: ignore[arg-type]
    assert entry is not None and entry.priority == 3
    assert directory.cached("sup_a") == (False, None)
