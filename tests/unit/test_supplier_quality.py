"""Supplier quality without I/O: defects sink a supplier in routing, returns split by supplier,
chargebacks follow who bears the cost."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from services.supplier.domain import Line, Offer, SupplierInfo, Track, Weights, rank
from services.supplier.domain.quality import (
    QualityScore,
    QualityTally,
    chargeback_of,
    returns_of,
)
from shared.events import (
    CostBearer,
    RefundIssued,
    RefundLine,
    ReturnAuthorized,
    ReturnLine,
    ReturnReason,
)

T0 = datetime(2026, 12, 3, 9, tzinfo=UTC)
LINE = Line("l1", "MUG", 1, Decimal("10.00"))


def offer(supplier: str, cost: str = "4.00") -> Offer:
    return Offer(supplier, "MUG", f"{supplier}-MUG", Decimal(cost), "USD", 10, 24)


def ranked(suppliers: dict[str, Track], costs: dict[str, str]) -> list[str]:
    infos = {k: SupplierInfo(k, True, 5, t) for k, t in suppliers.items()}
    offers = [offer(k, costs.get(k, "4.00")) for k in suppliers]
    found, reason = rank(LINE, offers, infos, "USD", Weights())
    assert reason is None
    return [o.supplier_id for o in found]


def test_a_supplier_with_a_high_defect_rate_sinks_below_an_otherwise_equal_one():
    clean = Track(decided=20, accepted=20, shipped=20, shipped_on_time=20)
    defective = Track(decided=20, accepted=20, shipped=20, shipped_on_time=20, defective=6)
    # "a" wins ties on its id: only the defects can put it second
    assert ranked({"a": clean, "b": clean}, {}) == ["a", "b"]
    assert ranked({"a": defective, "b": clean}, {}) == ["b", "a"]


def test_defects_outweigh_a_small_price_advantage_but_one_in_a_hundred_does_not():
    clean = Track(decided=20, accepted=20, shipped=20, shipped_on_time=20)
    bad = Track(decided=20, accepted=20, shipped=20, shipped_on_time=20, defective=8)
    assert ranked({"cheap": bad, "solid": clean}, {"solid": "5.00"}) == ["solid", "cheap"]
    rare = Track(decided=100, accepted=100, shipped=100, shipped_on_time=100, defective=1)
    assert ranked({"cheap": rare, "solid": clean}, {"solid": "5.00"}) == ["cheap", "solid"]


def test_quality_rate_is_one_for_a_clean_record_and_smoothed_for_a_new_supplier():
    assert Track().quality_rate == 1.0
    assert Track(shipped=50).quality_rate == 1.0
    assert Track(shipped=1, defective=1).quality_rate == 5 / 6  # one bad order is not ruin
    assert Track(shipped=0, defective=2).quality_rate == 5 / 7  # returns counted before ships
    assert Track(shipped=20, defective=20).reliability < Track(shipped=20).reliability


def test_a_return_counts_against_the_supplier_of_each_line():
    data = ReturnAuthorized(
        order_id="ord_1",
        return_id="ret_1",
        supplier_id="sup-rma",
        reason=ReturnReason.NOT_AS_DESCRIBED,
        lines=[
            ReturnLine(line_id="l1", sku="MUG", quantity=2, supplier_id="sup-a"),
            ReturnLine(line_id="l2", sku="CUP", quantity=1, supplier_id="sup-a"),
            ReturnLine(line_id="l3", sku="LAMP", quantity=1),
        ],
        rma="RMA-1",
        return_address="somewhere",
        authorized_at=T0,
    )
    parts = returns_of(data)
    assert [(p.supplier_id, p.units, p.defect) for p in parts] == [
        ("sup-a", 3, True),
        ("sup-rma", 1, True),
    ]
    changed_mind = data.model_copy(update={"reason": ReturnReason.CHANGED_MIND})
    assert not any(p.defect for p in returns_of(changed_mind))
    wrong = data.model_copy(update={"reason": ReturnReason.WRONG_ITEM})
    assert not any(p.defect for p in returns_of(wrong)), "a chargeback, not a quality defect"


def refund(bearer: CostBearer, supplier: str | None, *lines: RefundLine) -> RefundIssued:
    return RefundIssued(
        order_id="ord_1",
        refund_id="rf_1",
        amount=Decimal("12.345"),
        currency="KWD",
        reason=ReturnReason.DAMAGED_IN_TRANSIT,
        lines=list(lines),
        cost_bearer=bearer,
        supplier_id=supplier,
        channel="storefront",
        issued_at=T0,
    )


def test_a_refund_the_supplier_bears_is_its_chargeback_exactly():
    charge = chargeback_of(refund(CostBearer.SUPPLIER, "sup-a"))
    assert charge is not None and charge.supplier_id == "sup-a"
    assert (charge.amount, charge.currency, charge.refund_id) == (Decimal("12.345"), "KWD", "rf_1")
    assert chargeback_of(refund(CostBearer.MERCHANT, "sup-a")) is None
    by_line = refund(
        CostBearer.SUPPLIER, None, RefundLine(line_id="l1", quantity=1, supplier_id="s")
    )
    assert chargeback_of(by_line).supplier_id == "s"  # type: ignore[union-attr]
    two = refund(
        CostBearer.SUPPLIER,
        None,
        RefundLine(line_id="l1", quantity=1, supplier_id="s"),
        RefundLine(line_id="l2", quantity=1, supplier_id="t"),
    )
    assert chargeback_of(two) is None, "nobody single to charge"


def test_the_scorecard_defect_rate_is_per_shipped_order():
    score = QualityScore.measure(QualityTally(3, 5, 2, 4), shipped=8)
    assert (score.defective_orders, score.defective_units, score.defect_rate) == (2, 4, 0.25)
    assert score.quality_score == round((6 + 5) / (8 + 5), 4)
    assert QualityScore.measure(QualityTally(), shipped=0).defect_rate is None
