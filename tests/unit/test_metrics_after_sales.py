"""After-sales KPI arithmetic and facts: rates, exact refunds, clocks, targets, replay."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.metrics import aftersales as a
from services.metrics import tables as t
from services.metrics.domain import TOTAL, GroupBy
from services.metrics.handlers import fact_rows
from shared.consumer import PermanentError
from shared.events import (
    ComplaintFiled,
    ComplaintResponded,
    ComplaintTier,
    CostBearer,
    RefundIssued,
    RefundLine,
    ReturnLine,
    ReturnReason,
    ReturnRequested,
    new_envelope,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
START, END = T0, T0 + timedelta(days=10)
NOW = T0 + timedelta(days=30)
H = timedelta(hours=1)


def _total(facts: a.AfterSalesFacts, orders: int = 0, now: datetime = NOW) -> dict:
    (item,) = a.after_sales_kpis(facts, None, START, END, now, orders={TOTAL: orders})
    return item


def _complaint(tier="normal", filed=T0, responded=None, resolved=None, known=True, **kw):
    targets = {"normal": 24 * H, "urgent": 4 * H, "major": H}
    return a.Complaint(
        kw.get("cid", "c1"),
        kw.get("order_id", "o1"),
        kw.get("channel", "web"),
        tier,
        filed,
        filed + targets[tier] if known else None,
        filed + 48 * H if known else None,
        responded,
        resolved,
    )


def test_first_response_and_resolution_times_are_nearest_rank_percentiles_in_seconds():
    # 20 complaints answered after 1..20 minutes: p50 is the 10th, p95 the 19th
    facts = a.AfterSalesFacts(
        complaints=[
            _complaint(cid=f"c{n}", responded=T0 + timedelta(minutes=n), resolved=T0 + n * H)
            for n in range(1, 21)
        ]
    )
    stats = _total(facts)["complaints"]
    assert stats["first_response_s"] == {"p50": 600.0, "p95": 1140.0, "count": 20}
    assert stats["resolution_s"] == {"p50": 36000.0, "p95": 68400.0, "count": 20}
    assert stats["responded_within_target"] == 20 and stats["response_within_target_rate"] == 1.0
    # resolved within 48 h: all 20 (the last after 20 h)
    assert stats["resolved_within_target"] == 20 and stats["open"] == 0


def test_targets_count_late_answers_and_overdue_silence_but_not_what_is_still_in_time():
    facts = a.AfterSalesFacts(
        complaints=[
            _complaint("urgent", cid="late", responded=T0 + 5 * H),  # 5 h > 4 h
            _complaint("urgent", cid="exact", responded=T0 + 4 * H),  # on the dot: in time
            _complaint("major", cid="silent"),  # nothing by 1 h, and now is later
            _complaint("major", cid="fresh", filed=NOW - timedelta(minutes=30)),
            _complaint("normal", cid="unknown", known=False, responded=T0 + 30 * H),
        ]
    )
    now_window = a.after_sales_kpis(facts, None, START, NOW + H, NOW, orders={})[0]
    stats = now_window["complaints"]
    assert stats["complaints"] == 5 and stats["open"] == 5
    assert (stats["responded_within_target"], stats["response_target_missed"]) == (1, 2)
    assert stats["response_within_target_rate"] == 0.333333
    # resolution: the 48 h target passed for all but the fresh one, the unknown one has none
    assert (stats["resolved_within_target"], stats["resolution_target_missed"]) == (0, 3)
    by_tier = now_window["complaints_by_tier"]
    assert list(by_tier) == ["normal", "urgent", "major"]
    assert by_tier["urgent"]["response_target_missed"] == 1
    assert by_tier["major"]["complaints"] == 2 and by_tier["normal"]["first_response_s"]["p50"] == (
        108000.0
    )


def test_target_outcome():
    due = T0 + H
    assert a.target_outcome(T0, due, NOW) == "within"
    assert a.target_outcome(due, due, NOW) == "within"
    assert a.target_outcome(due + timedelta(seconds=1), due, NOW) == "missed"
    assert a.target_outcome(None, due, due) is None
    assert a.target_outcome(None, due, due + timedelta(microseconds=1)) == "missed"
    assert a.target_outcome(T0, None, NOW) is None


def _return(rid, order_id, reason="damaged_in_transit", steps=(), suppliers=("s1",), units=1):
    return a.Return(
        rid, order_id, "web", reason, units, T0 + H, frozenset(suppliers), frozenset(steps)
    )


def test_a_return_is_where_its_furthest_step_put_it_and_rejected_ones_are_not_returns():
    assert _return("r", "o").status == "requested"
    assert _return("r", "o", steps={"authorized"}).status == "authorized"
    assert _return("r", "o", steps={"authorized", "received"}).status == "received"
    assert _return("r", "o", steps={"received", "refunded"}).status == "refunded"
    assert _return("r", "o", steps={"authorized", "rejected"}).status == "rejected"
    facts = a.AfterSalesFacts(
        shipments=[a.Shipment(f"o{n}", "s1", "web", T0) for n in range(4)],
        returns=[
            _return("r1", "o0", units=2),
            _return("r2", "o0", reason="wrong_item"),
            _return("r3", "o1", steps={"rejected"}),
        ],
    )
    item = _total(facts)
    assert item["shipped_orders"] == 4 and item["returns"] == 3
    assert (
        item["returns_by_status"]["rejected"] == 1 and item["returns_by_status"]["requested"] == 2
    )
    assert item["returned_orders"] == 1 and item["returned_units"] == 3
    assert item["return_rate"] == 0.25
    assert item["returns_by_reason"]["wrong_item"]["return_rate"] == 0.25
    assert "changed_mind" not in item["returns_by_reason"]


def test_an_order_shipped_in_parts_is_shipped_once_but_once_per_supplier_by_supplier():
    facts = a.AfterSalesFacts(
        shipments=[
            a.Shipment("o1", "s1", "web", T0 + H),
            a.Shipment("o1", "s2", "web", T0 + 30 * H),
        ]
    )
    by_day = a.after_sales_kpis(facts, GroupBy.DAY, START, END, NOW, orders={})
    assert [(i["key"], i["shipped_orders"]) for i in by_day] == [("2026-03-01", 1)]
    by_supplier = a.after_sales_kpis(facts, GroupBy.SUPPLIER, START, END, NOW, orders={})
    assert [(i["key"], i["shipped_orders"]) for i in by_supplier] == [("s1", 1), ("s2", 1)]
    assert all(i["complaints"] is None for i in by_supplier)


def _refund(rid, order_id, amount_micros, currency="USD", bearer="merchant", supplier=None):
    return a.Refund(
        rid, order_id, "web", currency, amount_micros, "not_received", bearer, supplier, T0 + H
    )


def test_refund_amounts_are_exact_per_currency_and_split_by_who_bears_them():
    facts = a.AfterSalesFacts(
        refunds=[
            _refund("f1", "o1", 100_000),  # 0.10
            _refund("f2", "o1", 200_000),  # 0.20: 0.1 + 0.2 is 0.30 exactly
            _refund("f3", "o2", 1, "JPY", "supplier", "s1"),
        ]
    )
    item = _total(facts, orders=4)
    assert item["refund_amount"] == {"JPY": "0.000001", "USD": "0.30"}
    assert item["refund_cost_by_bearer"] == {
        "merchant": {"USD": "0.30"},
        "supplier": {"JPY": "0.000001"},
    }
    assert item["refunds"] == 3 and item["refunded_orders"] == 2 and item["refund_rate"] == 0.5
    assert _total(facts, orders=0)["refund_rate"] is None


# -- facts: rows per event, replay-exact -----------------------------------------------


def _requested(rid="ret_1", supplier="s1") -> ReturnRequested:
    return ReturnRequested(
        order_id="o1",
        return_id=rid,
        reason=ReturnReason.WRONG_ITEM,
        lines=[
            ReturnLine(line_id="l1", sku="A", quantity=2, supplier_id=supplier),
            ReturnLine(line_id="l2", sku="B", quantity=1),
        ],
        requested_at=T0,
    )


def _refund_event(rid="rf_1", amount="9.99", **kw) -> RefundIssued:
    values = {
        "order_id": "o1",
        "refund_id": rid,
        "amount": Decimal(amount),
        "currency": "USD",
        "reason": ReturnReason.CHANGED_MIND,
        "cost_bearer": CostBearer.MERCHANT,
        "channel": "web",
        "issued_at": T0,
    }
    return RefundIssued(**{**values, **kw})


def _rows(*events):
    rows: dict = defaultdict(list)
    for data in events:
        fact_rows(new_envelope(data), data, rows)
    return rows


def test_a_return_request_becomes_a_request_row_and_one_row_per_line():
    rows = _rows(_requested())
    (request,) = rows[t.return_request]
    assert request["units"] == 3 and request["reason"] == "wrong_item"
    assert [(r["line_id"], r["supplier_id"]) for r in rows[t.return_line]] == [
        ("l1", "s1"),
        ("l2", None),
    ]


def test_a_refund_is_attributed_to_the_supplier_charged_else_the_one_its_lines_came_from():
    def supplier(**kw):
        return _rows(_refund_event(**kw))[t.refund][0]["supplier_id"]

    assert supplier(supplier_id="s9", cost_bearer=CostBearer.SUPPLIER) == "s9"
    assert supplier(lines=[RefundLine(line_id="l1", quantity=1, supplier_id="s2")]) == "s2"
    two = [
        RefundLine(line_id="l1", quantity=1, supplier_id="s2"),
        RefundLine(line_id="l2", quantity=1, supplier_id="s3"),
    ]
    assert supplier(lines=two) is None
    assert supplier() is None
    assert _rows(_refund_event(amount="0.000001"))[t.refund][0]["amount_micros"] == 1


@pytest.mark.parametrize(
    ("event", "cause"),
    [
        (lambda: _refund_event(amount="0.0000001"), "amount=0.0000001 has more than 6 decimals"),
        (lambda: _refund_event(rid="r" * 65), "refund_id is longer than 64"),
        (lambda: _requested(rid="x" * 65), "return_id is longer than 64"),
        (lambda: _requested(supplier="s" * 65), r"lines\[l1\].supplier_id is longer"),
        (lambda: _refund_event(channel="c" * 65), "channel is longer than 64"),
    ],
)
def test_what_cannot_be_stored_exactly_is_refused_for_the_dead_letter_topic(event, cause):
    with pytest.raises(PermanentError, match=cause):
        _rows(event())


def _key(table, row):
    return tuple(row[c.name] for c in table.primary_key.columns)


def _stored(envelopes) -> dict:
    """What the tables would hold: a row whose key is there already is skipped."""
    rows: dict = defaultdict(list)
    for envelope, data in envelopes:
        fact_rows(envelope, data, rows)
    return {table: {_key(table, r): r for r in reversed(batch)} for table, batch in rows.items()}


complaint_ids = st.sampled_from(["c1", "c2", "c3"])


@st.composite
def after_sales_events(draw):
    events = []
    for n in range(draw(st.integers(1, 12))):
        kind = draw(st.sampled_from(["return", "refund", "filed", "responded"]))
        if kind == "return":
            events.append(_requested(rid=f"ret_{draw(st.integers(0, 3))}"))
        elif kind == "refund":
            cents = draw(st.integers(1, 10**8))
            events.append(
                _refund_event(rid=f"rf_{draw(st.integers(0, 3))}", amount=f"{cents / 100:.2f}")
            )
        else:
            tier = draw(st.sampled_from(list(ComplaintTier)))
            cid = draw(complaint_ids)
            if kind == "filed":
                events.append(
                    ComplaintFiled(
                        order_id="o1",
                        complaint_id=cid,
                        tier=tier,
                        respond_by=T0 + H,
                        resolve_by=T0 + 48 * H,
                        filed_at=T0,
                    )
                )
            else:
                events.append(
                    ComplaintResponded(
                        order_id="o1",
                        complaint_id=cid,
                        tier=tier,
                        by="ops",
                        filed_at=T0,
                        responded_at=T0 + n * H,
                    )
                )
    return [(new_envelope(e), e) for e in events]


@settings(max_examples=60, deadline=None)
@given(after_sales_events(), st.randoms(use_true_random=False))
def test_delivering_every_event_again_in_any_order_stores_the_same_facts(events, rnd):
    again = events + random.Random(rnd.random()).sample(events, len(events))
    assert _stored(again) == _stored(events)


shipments = st.lists(
    st.builds(
        a.Shipment,
        st.sampled_from(["o1", "o2", "o3", "o4"]),
        st.sampled_from(["s1", "s2"]),
        st.sampled_from(["web", "shop"]),
        st.integers(0, 12 * 24).map(lambda h: T0 + h * H),
    ),
    max_size=20,
)
refunds = st.lists(
    st.builds(
        a.Refund,
        st.uuids().map(str),
        st.sampled_from(["o1", "o2", "o3"]),
        st.sampled_from(["web", "shop"]),
        st.sampled_from(["USD", "EUR"]),
        st.integers(1, 10**12),
        st.sampled_from([r.value for r in ReturnReason]),
        st.sampled_from(list(a.COST_BEARERS)),
        st.sampled_from([None, "s1", "s2"]),
        st.integers(0, 12 * 24).map(lambda h: T0 + h * H),
    ),
    max_size=20,
)


@settings(max_examples=80, deadline=None)
@given(shipments, refunds, st.randoms(use_true_random=False))
def test_figures_do_not_depend_on_the_order_facts_come_in_and_channels_add_up(ships, money, rnd):
    facts = a.AfterSalesFacts(shipments=ships, refunds=money)
    shuffled = a.AfterSalesFacts(
        shipments=rnd.sample(ships, len(ships)), refunds=rnd.sample(money, len(money))
    )
    for group in (None, GroupBy.DAY, GroupBy.SUPPLIER, GroupBy.CHANNEL):
        assert a.after_sales_kpis(facts, group, START, END, NOW, orders={}) == (
            a.after_sales_kpis(shuffled, group, START, END, NOW, orders={})
        )
    total = _total(facts)
    by_channel = a.after_sales_kpis(facts, GroupBy.CHANNEL, START, END, NOW, orders={})
    assert sum(i["refunds"] for i in by_channel) == total["refunds"]
    for field in ("complaints", "open", "responded_within_target", "resolution_target_missed"):
        assert sum(i["complaints"][field] for i in by_channel) == total["complaints"][field]
    tiers = total["complaints_by_tier"]
    assert sum(tiers[tier]["complaints"] for tier in a.TIERS) == total["complaints"]["complaints"]
    summed: Counter[str] = Counter()
    for item in by_channel:
        for currency, amount in item["refund_amount"].items():
            summed[currency] += Decimal(amount)
    assert {c: Decimal(v) for c, v in total["refund_amount"].items()} == dict(summed)
    inside = [f for f in money if START <= f.issued_at < END]
    for currency in {f.currency for f in inside}:
        exact = sum(Decimal(f.amount_micros).scaleb(-6) for f in inside if f.currency == currency)
        assert Decimal(total["refund_amount"][currency]) == exact
