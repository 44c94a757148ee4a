"""A known after-sales history on top of `metrics_history`, with the KPIs it must produce.

Orders A (storefront, S1), B (shopify, S2) and D (storefront, S1) ship on days 1, 2 and
3. A is returned damaged and refunded (charged back to S1); B's change-of-mind return is
rejected and B gets a merchant-borne partial refund for a missing item; D's
not-as-described return is authorised by S1 (its line names no supplier); cancelled C
gets a refund in EUR with no supplier. Complaints: A normal (answered and resolved in
time), B urgent (answered late, resolved late), D major (answered in time, never
resolved, so past its 48 h target). A's refund is announced twice under two event ids.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from shared.events import (
    ComplaintFiled,
    ComplaintResolved,
    ComplaintResponded,
    ComplaintTier,
    CostBearer,
    Envelope,
    RefundIssued,
    RefundLine,
    ReturnAuthorized,
    ReturnLine,
    ReturnReason,
    ReturnReceived,
    ReturnRejected,
    ReturnRequested,
    ShipmentDispatched,
    new_envelope,
)
from tests.support import metrics_history as h
from tests.support.metrics_history import S1, S2, at

HOUR = timedelta(hours=1)
TARGETS = {"normal": 24 * HOUR, "urgent": 4 * HOUR, "major": HOUR}


def _return(rid, order_id, reason, when, line_id, supplier=None) -> Envelope:
    line = ReturnLine(line_id=line_id, sku=f"SKU-{line_id}", quantity=1, supplier_id=supplier)
    data = ReturnRequested(
        order_id=order_id, return_id=rid, reason=reason, lines=[line], requested_at=when
    )
    return new_envelope(data, time=when)


def _authorized(rid, order_id, reason, when, line_id, supplier) -> Envelope:
    line = ReturnLine(line_id=line_id, sku=f"SKU-{line_id}", quantity=1, supplier_id=supplier)
    data = ReturnAuthorized(
        order_id=order_id,
        return_id=rid,
        supplier_id=supplier,
        reason=reason,
        lines=[line],
        rma=f"RMA-{rid}",
        return_address="Returns dock 4, Shenzhen",
        authorized_at=when,
    )
    return new_envelope(data, time=when)


def _refund(refund_id, order_id, amount, currency, reason, bearer, when, **extra) -> RefundIssued:
    return RefundIssued(
        order_id=order_id,
        refund_id=refund_id,
        amount=Decimal(amount),
        currency=currency,
        reason=reason,
        cost_bearer=bearer,
        issued_at=when,
        **extra,
    )


def _complaint(cid, order_id, tier, filed, responded=None, resolved=None) -> list[Envelope]:
    t = ComplaintTier(tier)
    out = [
        new_envelope(
            ComplaintFiled(
                order_id=order_id,
                complaint_id=cid,
                tier=t,
                respond_by=filed + TARGETS[tier],
                resolve_by=filed + 48 * HOUR,
                filed_at=filed,
            ),
            time=filed,
        )
    ]
    if responded is not None:
        out.append(
            new_envelope(
                ComplaintResponded(
                    order_id=order_id,
                    complaint_id=cid,
                    tier=t,
                    by="ops_li",
                    filed_at=filed,
                    responded_at=responded,
                ),
                time=responded,
            )
        )
    if resolved is not None:
        out.append(
            new_envelope(
                ComplaintResolved(
                    order_id=order_id,
                    complaint_id=cid,
                    tier=t,
                    by="ops_li",
                    filed_at=filed,
                    resolved_at=resolved,
                ),
                time=resolved,
            )
        )
    return out


def after_sales() -> list[Envelope]:
    """The after-sales envelopes (and B's dispatch), in an order that is not causal."""
    damaged, nad = ReturnReason.DAMAGED_IN_TRANSIT, ReturnReason.NOT_AS_DESCRIBED
    b_disp = new_envelope(
        ShipmentDispatched(
            order_id="ord_B", supplier_id=S2, carrier="ups", tracking_number="T-B", line_ids=["b1"]
        ),
        time=at(2, 10),
    )
    rf1_data = _refund(
        "rf_1",
        "ord_A",
        "12.50",
        "USD",
        damaged,
        CostBearer.SUPPLIER,
        at(3, 9),
        return_id="ret_1",
        supplier_id=S1,
        channel="storefront",
        lines=[RefundLine(line_id="a1", quantity=1, supplier_id=S1)],
    )
    rf1 = new_envelope(rf1_data, time=at(3, 9))
    rf1_again = new_envelope(rf1_data, time=at(3, 9))  # the same refund, a new event id
    return [
        rf1,  # refunded before its return is seen
        new_envelope(ReturnReceived(order_id="ord_A", return_id="ret_1", received_at=at(3, 8))),
        _authorized("ret_1", "ord_A", damaged, at(2, 9), "a1", S1),
        _return("ret_1", "ord_A", damaged, at(2, 8), "a1", S1),
        b_disp,
        _return("ret_2", "ord_B", ReturnReason.CHANGED_MIND, at(3, 10), "b1", S2),
        new_envelope(
            ReturnRejected(order_id="ord_B", return_id="ret_2", note="worn", rejected_at=at(3, 11))
        ),
        _return("ret_3", "ord_D", nad, at(3, 18), "d1"),
        _authorized("ret_3", "ord_D", nad, at(3, 19), "d1", S1),
        new_envelope(
            _refund(
                "rf_2",
                "ord_B",
                "10.05",
                "USD",
                ReturnReason.NOT_RECEIVED,
                CostBearer.MERCHANT,
                at(2, 14),
                channel="shopify",
                lines=[RefundLine(line_id="b1", quantity=1, supplier_id=S2)],
            )
        ),
        new_envelope(
            _refund(
                "rf_3",
                "ord_C",
                "7.777777",
                "EUR",
                ReturnReason.CHANGED_MIND,
                CostBearer.MERCHANT,
                at(2, 10),
                channel="storefront",
            )
        ),
        *reversed(_complaint("cmp_1", "ord_A", "normal", at(1, 21), at(2, 1), at(2, 21))),
        *_complaint("cmp_2", "ord_B", "urgent", at(2, 8), at(2, 13), at(4, 9)),
        *_complaint("cmp_3", "ord_D", "major", at(3, 16, 30), at(3, 17)),
        rf1_again,
    ]


def history() -> list[Envelope]:
    return [*h.history(), *after_sales()]


DISTINCT_EVENTS = h.DISTINCT_EVENTS + len(after_sales())


def _pcts(*samples: float) -> dict[str, object]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50": None, "p95": None, "count": 0}
    return {"p50": ordered[(len(ordered) + 1) // 2 - 1], "p95": ordered[-1], "count": len(ordered)}


def complaints(
    n: int, open_: int, first: tuple[float, ...], resolution: tuple[float, ...], *target: int
) -> dict[str, object]:
    """`target`: responded within, missed, resolved within, missed."""
    rw, rm, sw, sm = target
    return {
        "complaints": n,
        "open": open_,
        "first_response_s": _pcts(*first),
        "resolution_s": _pcts(*resolution),
        "responded_within_target": rw,
        "response_target_missed": rm,
        "response_within_target_rate": round(rw / (rw + rm), 6) if rw + rm else None,
        "resolved_within_target": sw,
        "resolution_target_missed": sm,
        "resolution_within_target_rate": round(sw / (sw + sm), 6) if sw + sm else None,
    }


NONE = complaints(0, 0, (), (), 0, 0, 0, 0)
NORMAL = complaints(1, 0, (14400.0,), (86400.0,), 1, 0, 1, 0)  # 4 h, 24 h
URGENT = complaints(1, 0, (18000.0,), (176400.0,), 0, 1, 0, 1)  # 5 h > 4 h, 49 h > 48 h
MAJOR = complaints(1, 1, (1800.0,), (), 1, 0, 0, 1)  # 30 min; unresolved past 48 h


def _statuses(**counts: int) -> dict[str, int]:
    return {
        s: counts.get(s, 0) for s in ("requested", "authorized", "received", "refunded", "rejected")
    }


EXPECTED_TOTAL = {
    "key": "all",
    "shipped_orders": 3,
    "returns": 3,
    "returns_by_status": _statuses(authorized=1, refunded=1, rejected=1),
    "returned_orders": 2,
    "returned_units": 2,
    "return_rate": 0.666667,
    "returns_by_reason": {
        "damaged_in_transit": {
            "returns": 1,
            "returned_orders": 1,
            "returned_units": 1,
            "return_rate": 0.333333,
        },
        "not_as_described": {
            "returns": 1,
            "returned_orders": 1,
            "returned_units": 1,
            "return_rate": 0.333333,
        },
    },
    "orders": 5,
    "refunds": 3,
    "refunded_orders": 3,
    "refund_amount": {"EUR": "7.777777", "USD": "22.55"},
    "refund_rate": 0.6,
    "refunds_by_reason": {
        "changed_mind": {
            "refunds": 1,
            "refunded_orders": 1,
            "amount": {"EUR": "7.777777"},
            "refund_rate": 0.2,
        },
        "damaged_in_transit": {
            "refunds": 1,
            "refunded_orders": 1,
            "amount": {"USD": "12.50"},
            "refund_rate": 0.2,
        },
        "not_received": {
            "refunds": 1,
            "refunded_orders": 1,
            "amount": {"USD": "10.05"},
            "refund_rate": 0.2,
        },
    },
    "refund_cost_by_bearer": {
        "merchant": {"EUR": "7.777777", "USD": "10.05"},
        "supplier": {"USD": "12.50"},
    },
    "complaints": complaints(3, 1, (14400.0, 18000.0, 1800.0), (86400.0, 176400.0), 2, 1, 1, 2),
    "complaints_by_tier": {"normal": NORMAL, "urgent": URGENT, "major": MAJOR},
}
"""The window 1-3 March, ungrouped."""

EXPECTED_BY_CHANNEL = {
    "shopify": {
        "shipped_orders": 1,
        "returns": 1,
        "returns_by_status": _statuses(rejected=1),
        "returned_orders": 0,
        "return_rate": 0.0,
        "orders": 1,
        "refunds": 1,
        "refund_amount": {"USD": "10.05"},
        "refund_rate": 1.0,
        "refund_cost_by_bearer": {"merchant": {"USD": "10.05"}, "supplier": {}},
        "complaints": URGENT,
    },
    "storefront": {
        "shipped_orders": 2,
        "returns": 2,
        "returns_by_status": _statuses(authorized=1, refunded=1),
        "returned_orders": 2,
        "return_rate": 1.0,
        "orders": 4,
        "refunds": 2,
        "refund_amount": {"EUR": "7.777777", "USD": "12.50"},
        "refund_rate": 0.5,
        "refund_cost_by_bearer": {"merchant": {"EUR": "7.777777"}, "supplier": {"USD": "12.50"}},
        "complaints": complaints(2, 1, (14400.0, 1800.0), (86400.0,), 2, 0, 1, 1),
    },
}

EXPECTED_BY_SUPPLIER = {
    S1: {
        "shipped_orders": 2,
        "returns": 2,
        "returned_orders": 2,
        "return_rate": 1.0,
        "orders": 2,
        "refunds": 1,
        "refund_amount": {"USD": "12.50"},
        "refund_rate": 0.5,
        "complaints": None,
        "complaints_by_tier": None,
    },
    S2: {
        "shipped_orders": 1,
        "returns": 1,
        "returned_orders": 0,
        "return_rate": 0.0,
        "orders": 1,
        "refunds": 1,
        "refund_amount": {"USD": "10.05"},
        "refund_rate": 1.0,
        "complaints": None,
        "complaints_by_tier": None,
    },
}

EXPECTED_BY_DAY = {
    "2026-03-01": {
        "shipped_orders": 1,
        "returns": 0,
        "orders": 3,
        "refunds": 0,
        "complaints": complaints(1, 0, (14400.0,), (86400.0,), 1, 0, 1, 0),
    },
    "2026-03-02": {
        "shipped_orders": 1,
        "returns": 1,
        "return_rate": 1.0,
        "orders": 2,
        "refunds": 2,
        "refund_rate": 1.0,
        "refund_amount": {"EUR": "7.777777", "USD": "10.05"},
        "complaints": URGENT,
    },
    "2026-03-03": {
        "shipped_orders": 1,
        "returns": 2,
        "returned_orders": 1,
        "return_rate": 1.0,
        "orders": 0,
        "refunds": 1,
        "refund_rate": None,
        "refund_amount": {"USD": "12.50"},
        "complaints": complaints(1, 1, (1800.0,), (), 1, 0, 0, 1),
    },
}
"""Selected fields of each item (the rest follow from the same rules)."""
