"""The routing policy: eligibility, ranking, measured reliability, splitting, stock."""

from __future__ import annotations

from decimal import Decimal

from services.supplier.domain import Line, Offer, SupplierInfo, Track, Weights, plan, rank
from shared.events import RoutingFailureReason

W = Weights()


def offer(
    supplier: str,
    sku: str = "MUG",
    cost: str = "4.00",
    stock: int = 10,
    lead: float = 24,
    currency: str = "USD",
):
    return Offer(supplier, sku, f"{supplier}-{sku}", Decimal(cost), currency, stock, lead)


def sup(
    supplier: str, priority: int = 5, track: Track | None = None, active: bool = True
) -> SupplierInfo:
    return SupplierInfo(supplier, active, priority, track or Track())


LINE = Line("l1", "MUG", 2, Decimal("10.00"))


def test_cheaper_wins_when_all_else_is_equal():
    ranked, reason = rank(
        LINE,
        [offer("a", cost="6.00"), offer("b", cost="4.00")],
        {"a": sup("a"), "b": sup("b")},
        "USD",
        W,
    )
    assert reason is None and [o.supplier_id for o in ranked] == ["b", "a"]


def test_a_supplier_that_keeps_failing_sinks_below_a_dearer_reliable_one():
    failing = Track(decided=40, accepted=10, shipped=10, shipped_on_time=3)
    reliable = Track(decided=40, accepted=40, shipped=40, shipped_on_time=39)
    suppliers = {"cheap": sup("cheap", track=failing), "solid": sup("solid", track=reliable)}
    ranked, _ = rank(
        LINE, [offer("cheap", cost="4.00"), offer("solid", cost="5.00")], suppliers, "USD", W
    )
    assert [o.supplier_id for o in ranked] == ["solid", "cheap"]
    new = {"cheap": sup("cheap"), "solid": sup("solid", track=reliable)}
    ranked, _ = rank(
        LINE, [offer("cheap", cost="4.00"), offer("solid", cost="5.00")], new, "USD", W
    )
    assert ranked[0].supplier_id == "cheap", "a new supplier is given the benefit of the doubt"


def test_lead_time_and_priority_break_near_ties():
    suppliers = {"fast": sup("fast"), "slow": sup("slow")}
    ranked, _ = rank(LINE, [offer("slow", lead=160), offer("fast", lead=12)], suppliers, "USD", W)
    assert ranked[0].supplier_id == "fast"
    suppliers = {"pref": sup("pref", priority=1), "other": sup("other", priority=9)}
    ranked, _ = rank(LINE, [offer("other"), offer("pref")], suppliers, "USD", W)
    assert ranked[0].supplier_id == "pref"


def test_ineligible_offers_and_the_reason_when_nothing_is_left():
    suppliers = {"a": sup("a"), "off": sup("off", active=False)}
    assert rank(LINE, [], suppliers, "USD", W) == ([], RoutingFailureReason.NO_OFFER)
    assert rank(LINE, [offer("off")], suppliers, "USD", W)[1] is RoutingFailureReason.NO_OFFER
    assert (
        rank(LINE, [offer("a", currency="EUR")], suppliers, "USD", W)[1]
        is RoutingFailureReason.NO_OFFER
    )
    assert (
        rank(LINE, [offer("a", cost="10.01")], suppliers, "USD", W)[1]
        is RoutingFailureReason.NEGATIVE_MARGIN
    )
    assert rank(LINE, [offer("a", cost="10.00")], suppliers, "USD", W)[1] is None, (
        "zero margin is allowed"
    )
    assert (
        rank(LINE, [offer("a", stock=1)], suppliers, "USD", W)[1]
        is RoutingFailureReason.OUT_OF_STOCK
    )
    tried = frozenset({"a"})
    assert (
        rank(LINE, [offer("a")], suppliers, "USD", W, tried)[1]
        is RoutingFailureReason.ALL_SUPPLIERS_FAILED
    )


def test_plan_splits_lines_by_supplier_and_draws_stock_down():
    lines = [
        Line("l1", "MUG", 3, Decimal("10")),
        Line("l2", "MUG", 3, Decimal("10")),
        Line("l3", "TEA", 1, Decimal("5")),
    ]
    offers = [
        offer("a", "MUG", "3.00", stock=4),
        offer("b", "MUG", "3.50", stock=10),
        offer("b", "TEA", "1.00", stock=1),
    ]
    result = plan(lines, offers, {"a": sup("a"), "b": sup("b")}, "USD", W)
    assert {s: [p.line.line_id for p in picks] for s, picks in result.by_supplier.items()} == {
        "a": ["l1"],
        "b": ["l2", "l3"],
    }, "a has stock for one line of 3 only; the second goes to b, TEA joins b's order"
    assert result.failed == {}


def test_plan_reports_failed_lines_and_keeps_the_rest():
    lines = [Line("l1", "MUG", 1, Decimal("10")), Line("l2", "GONE", 1, Decimal("10"))]
    result = plan(lines, [offer("a")], {"a": sup("a")}, "USD", W, {"l1": frozenset()})
    assert list(result.by_supplier) == ["a"] and result.failed == {
        "l2": RoutingFailureReason.NO_OFFER
    }


def test_misses_weigh_on_reliability_and_fade_with_age() -> None:
    from datetime import timedelta

    from services.supplier.domain.routing_policy import MISS_HALF_LIFE, Track, decayed

    fresh = Track(penalty=decayed([timedelta(0)] * 5))
    week_old = Track(penalty=decayed([MISS_HALF_LIFE] * 5))
    long_ago = Track(penalty=decayed([MISS_HALF_LIFE * 10] * 5))
    assert fresh.reliability == 0.5
    assert fresh.reliability < week_old.reliability < long_ago.reliability < 1.0
    assert long_ago.reliability > 0.99, "a supplier that stopped missing recovers"
