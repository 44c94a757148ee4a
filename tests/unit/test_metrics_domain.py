"""KPI arithmetic: exact percentiles, exact money, order independence, supplier ranking."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics import domain
from services.metrics.domain import Facts, GroupBy, SupplierOrder

T0 = datetime(2026, 3, 1, tzinfo=UTC)
START, END = T0, T0 + timedelta(days=10)


@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=1), st.floats(0.01, 100))
def test_percentile_is_the_nearest_rank(samples, q):
    """The smallest sample with at least q% of the samples at or below it."""
    value = domain.percentile(samples, q)
    assert value in samples
    share = Fraction(str(q)) / 100
    assert Fraction(sum(s <= value for s in samples), len(samples)) >= share
    assert Fraction(sum(s < value for s in samples), len(samples)) < share


def test_percentile_of_nothing_is_none():
    assert domain.percentile([], 50) is None


latencies = st.lists(
    st.tuples(
        st.sampled_from(["s1", "s2", "s3"]), st.integers(0, 9 * 86400), st.integers(1, 86400)
    ),
    min_size=1,
    max_size=200,
)


def _supplier_orders(rows):
    return [
        SupplierOrder(
            order_id=f"o{n}",
            supplier_id=supplier,
            confirmed_at=T0 + timedelta(seconds=placed + took),
            ship_by=T0 + timedelta(days=30),
            dispatched_at=None,
            delay_reasons=frozenset(),
            placed_at=T0 + timedelta(seconds=placed),
            channel="web",
        )
        for n, (supplier, placed, took) in enumerate(rows)
    ]


@settings(max_examples=60)
@given(latencies)
def test_confirmation_latency_percentiles_are_exact_over_every_sample(rows):
    """Per supplier and overall, p50/p95 equal the nearest rank of the full sample set."""
    facts = Facts(supplier_orders=_supplier_orders(rows))
    confirmed = [(s, placed + took) for s, placed, took in rows if placed + took < 10 * 86400]
    by_supplier = {i["key"]: i for i in domain.kpis(facts, GroupBy.SUPPLIER, START, END)}
    for supplier in {s for s, _ in confirmed}:
        samples = sorted(
            float(took) for s, placed, took in rows if s == supplier and placed + took < 10 * 86400
        )
        got = by_supplier[supplier]["confirmation_latency_s"]
        assert got["count"] == len(samples)
        assert got["p50"] == samples[math.ceil(Fraction(50, 100) * len(samples)) - 1]
        assert got["p95"] == samples[math.ceil(Fraction(95, 100) * len(samples)) - 1]
    (total,) = domain.kpis(facts, None, START, END)
    everything = sorted(float(took) for _, placed, took in rows if placed + took < 10 * 86400)
    assert total["confirmation_latency_s"]["count"] == len(everything)
    if everything:
        assert (
            total["confirmation_latency_s"]["p95"]
            == everything[math.ceil(Fraction(95, 100) * len(everything)) - 1]
        )


@settings(max_examples=40)
@given(latencies, st.randoms(use_true_random=False))
def test_the_order_facts_arrive_in_does_not_change_any_kpi(rows, rnd: random.Random):
    facts = Facts(supplier_orders=_supplier_orders(rows))
    shuffled = Facts(supplier_orders=rnd.sample(facts.supplier_orders, len(facts.supplier_orders)))
    for group in (GroupBy.DAY, GroupBy.SUPPLIER, GroupBy.CHANNEL, None):
        assert domain.kpis(facts, group, START, END) == domain.kpis(shuffled, group, START, END)


def test_money_is_exact_with_at_least_the_minor_units():
    assert domain.money(12_500_000, "USD") == "12.50"
    assert domain.money(9_876_600, "USD") == "9.8766"
    assert domain.money(1_000_000_000, "JPY") == "1000"
    assert domain.money(-1_234_500, "BHD") == "-1.2345"
    assert domain.mean_money(80_000_000, 3, "USD") == "26.67"
    assert domain.mean_money(250_000, 2, "USD") == "0.12"  # half-even: 0.125 -> 0.12


def test_on_time_and_late_need_a_dispatch_or_a_missed_deadline():
    due = T0 + timedelta(days=1)

    def so(n, dispatched, reasons=()):
        return SupplierOrder(f"o{n}", "s1", T0, due, dispatched, frozenset(reasons), T0, "web")

    facts = Facts(
        supplier_orders=[
            so(1, due),  # on the deadline: on time
            so(2, due + timedelta(seconds=1)),  # a second late
            so(3, None, ["no_tracking_by_deadline"]),  # never shipped, reported late
            so(4, None, ["at_risk"]),  # still open: neither
        ]
    )
    (item,) = domain.kpis(facts, GroupBy.SUPPLIER, START, END)
    assert (item["shipped_on_time"], item["shipped_late"], item["supplier_orders_due"]) == (1, 2, 4)
    assert item["on_time_rate"] == 0.333333
    assert item["delay_rate"] == 0.5
    assert item["delays_by_reason"] == {"at_risk": 1, "no_tracking_by_deadline": 1}


def test_ranking_puts_the_most_punctual_first_and_the_undecided_last():
    items = [
        {"key": "late", "on_time_rate": 0.2, "delay_rate": 0.5},
        {"key": "new", "on_time_rate": None, "delay_rate": None},
        {"key": "good-but-delayed", "on_time_rate": 0.9, "delay_rate": 0.3},
        {"key": "good", "on_time_rate": 0.9, "delay_rate": 0.1},
    ]
    assert [i["key"] for i in domain.ranking(items)] == ["good", "good-but-delayed", "late", "new"]


def test_a_delivery_reported_twice_is_one_sample():
    delivered = T0 + timedelta(days=2)
    d = domain.Delivery("o1", "T-1", "s1", delivered, T0, "web")
    again = domain.Delivery("o1", "T-1", "s1", delivered + timedelta(hours=1), T0, "web")
    (item,) = domain.kpis(Facts(deliveries=[again, d]), None, START, END)
    assert item["deliveries"] == 1
    assert item["cycle_time_s"] == {"p50": 172800.0, "p95": 172800.0, "count": 1}


def test_an_amount_that_cannot_be_stored_exactly_is_refused_not_rounded():
    from decimal import Decimal

    import pytest

    from services.metrics.handlers import micros
    from shared.consumer import PermanentError

    assert micros(Decimal("30.1234"), "unit_cost") == 30_123_400
    assert micros(Decimal("-0.000001"), "unit_cost") == -1
    with pytest.raises(PermanentError, match=r"unit_cost=0\.0000001 has more than 6 decimals"):
        micros(Decimal("0.0000001"), "unit_cost")
    with pytest.raises(PermanentError, match="out of range"):
        micros(Decimal("1e20"), "unit_price")


def test_prometheus_counters_count_each_applied_fact():
    from prometheus_client import REGISTRY

    from services.metrics import exposition
    from services.metrics import tables as t

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        sample("dropship_kpi_orders_total", channel="unit", currency="USD"),
        sample("dropship_kpi_gmv_total", currency="USD"),
        sample("dropship_kpi_delays_total", supplier_id="s-unit", reason="at_risk"),
        sample("dropship_kpi_supplier_confirmations_total", supplier_id="s-unit"),
        sample("dropship_kpi_deliveries_total"),
        sample("dropship_kpi_notifications_total", kind="unit", channel="sms", status="sent"),
    )
    exposition.observe(
        {
            t.sale: [{"channel": "unit", "currency": "USD", "total_micros": 1_500_000}] * 3,
            t.delay: [{"supplier_id": "s-unit", "reason": "at_risk"}],
            t.confirmation: [{"supplier_id": "s-unit"}, {"supplier_id": "s-other"}] * 2,
            t.delivery: [{"order_id": "o1"}] * 5,
            t.notice: [{"kind": "unit", "channel": "sms", "status": "sent"}] * 2,
        }
    )
    after = (
        sample("dropship_kpi_orders_total", channel="unit", currency="USD"),
        sample("dropship_kpi_gmv_total", currency="USD"),
        sample("dropship_kpi_delays_total", supplier_id="s-unit", reason="at_risk"),
        sample("dropship_kpi_supplier_confirmations_total", supplier_id="s-unit"),
        sample("dropship_kpi_deliveries_total"),
        sample("dropship_kpi_notifications_total", kind="unit", channel="sms", status="sent"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [3.0, 4.5, 1.0, 2.0, 5.0, 2.0]


def test_facts_of_an_order_not_seen_yet_count_under_the_unknown_channel():
    later = T0 + timedelta(days=1)
    facts = Facts(
        cancellations=[domain.Occurrence("ghost", domain.UNKNOWN, later, "customer_request")],
        notices=[
            domain.Occurrence(
                "ghost", domain.UNKNOWN, later, kind="delay", notice_channel="sms", status="sent"
            )
        ],
    )
    (item,) = domain.kpis(facts, GroupBy.CHANNEL, START, END)
    assert item["key"] == "unknown"
    assert item["cancellations"] == 1 and item["notices_sent"] == 1
    assert item["orders"] == 0 and item["gmv"] == {}


def test_a_supplier_order_confirmed_before_the_window_counts_only_where_it_is_due():
    before = START - timedelta(days=2)
    so = SupplierOrder(
        "o1", "s1", before, START + timedelta(hours=5), START, frozenset(), before, "web"
    )
    days = domain.days_between(START.date(), (END - timedelta(days=1)).date())
    items = domain.kpis(Facts(supplier_orders=[so]), GroupBy.DAY, START, END, keys=days)
    assert [i["key"] for i in items] == days
    assert items[0]["supplier_orders_due"] == 1 and items[0]["shipped_on_time"] == 1
    assert all(i["confirmation_latency_s"]["count"] == 0 for i in items)
    assert sum(i["confirmed_orders"] for i in items) == 0


def test_every_order_event_has_facts_and_the_consumer_takes_exactly_those():
    import pytest

    from services.metrics.consumers import CONSUMERS
    from services.metrics.handlers import FACTS, fact_rows
    from shared.asyncapi import FLOWS
    from shared.consumer import PermanentError
    from shared.events import EVENT_TYPES, SupplierStatusChanged, new_envelope

    catalogued = {EVENT_TYPES[t] for t, flow in FLOWS.items() if "metrics" in flow.consumers}
    assert set(FACTS) == catalogued
    assert set(CONSUMERS) == {m.event_type for m in catalogued}
    status = SupplierStatusChanged(
        supplier_id="s-1", status="unavailable", reason="maintenance", changed_at=T0
    )
    with pytest.raises(PermanentError, match="no facts are kept for supplier-status-changed"):
        fact_rows(new_envelope(status), status, {})
