"""The chaos checker's after-sales half: what `RefundStorm` was answered, held against the
order, supplier and notify databases, the mailbox, the demo shops and the after-sales KPIs.

Never more refunded than paid (exact money); each Idempotency-Key one refund row, one
`refund-issued` applied by notify (one e-mail), one chargeback when the supplier bears
it, one refund at the shop for a marketplace order; the KPIs equal the refund rows.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from shared.events import SUPPLIER_FAULTS, ReturnReason
from tests.support.chaos_refunds import Ask, RefundStorm
from tests.support.data import API_KEY

SHOPS = ("maple-and-pine-goods", "maple-and-pine-woo")
FAULTS = {r.value for r in SUPPLIER_FAULTS}


async def rows(url: str, sql: str) -> list[Any]:
    """One query's rows from a service's database, read straight (the checkers' truth)."""
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return list(await conn.execute(text(sql)))
    finally:
        await engine.dispose()


def paid_of(storm: Any) -> dict[tuple[str, str], Decimal]:
    """What each storm order's customer paid, by (channel, external id), as placed."""
    return {
        **{("storefront", k): v for k, v in storm.accepted.items()},
        **{("shopify", str(k)): v for k, v in storm.shopify.items()},
        **{("woocommerce", str(k)): v for k, v in storm.woocommerce.items()},
    }


def check_answers(ask: Ask) -> str | None:
    """Every answer to one key is the same answer; returns the refund id it issued."""
    assert ask.answers, f"refund {ask.key} never answered"
    statuses = {status for status, _, _ in ask.answers}
    assert len(statuses) == 1, f"refund {ask.key} answered differently: {ask.answers}"
    (status,) = statuses
    if status == 409:
        codes = {body["error"]["code"] for _, body, _ in ask.answers}
        assert codes == {"refund_exceeds_paid"}, ask.answers
        assert ask.expect in ("exceeds", "rival"), f"{ask.key} refused: {ask.answers}"
        return None
    assert status == 201 and ask.expect in ("issued", "rival"), f"{ask.key}: {ask.answers}"
    (refund_id,) = ask.refund_ids()  # a retry, or a twin at the same time, replays it
    fresh = [a for a in ask.answers if not a[2]]
    assert len(fresh) <= 1, f"{ask.key} issued more than once: {ask.answers}"
    assert len(ask.answers) < 2 or any(a[2] for a in ask.answers), ask.answers
    if "amount" in ask.body:
        assert {Decimal(b["amount"]) for _, b, _ in ask.answers} == {Decimal(ask.body["amount"])}
    return refund_id


async def check_refunds(
    c: httpx.AsyncClient,
    urls: dict[str, str],
    market: str,
    dbs: dict[str, str],
    storm: Any,
    after: RefundStorm,
    mailbox: Any,
) -> str:
    """Assert the after-sales invariants; a one-line summary for the run's printout."""
    issued: dict[str, Ask] = {}
    for plan in after.plans.values():
        won = {a.key: check_answers(a) for a in plan.asks}
        issued |= {rid: a for a in plan.asks if (rid := won[a.key])}
        if plan.kind == "rivals":
            assert sum(1 for rid in won.values() if rid) == 1, f"rivals: {plan.asks}"
        if plan.kind == "partials":
            assert [bool(won[a.key]) for a in plan.asks] == [True, True, False, True]
    assert issued, "the storm issued refunds"

    refunds = await rows(
        dbs["order"],
        "SELECT r.id, r.order_id, r.return_id, r.amount, r.currency, r.reason, r.cost_bearer,"
        " r.supplier_id, r.channel, o.external_id, o.refunded_total FROM refund r"
        " JOIN customer_order o ON o.id = r.order_id",
    )
    by_id = {r.id: r for r in refunds}
    # one refund row per key that was answered 201, and no row without one
    assert set(by_id) == set(issued), (set(by_id) ^ set(issued), refunds)
    paid = paid_of(storm)
    per_order: dict[str, Decimal] = defaultdict(Decimal)
    for r in refunds:
        per_order[r.order_id] += r.amount
        ask = issued[r.id]
        assert r.currency == "USD" and r.order_id == ask.order_id
        if "amount" in ask.body:
            assert r.amount == Decimal(ask.body["amount"])
        assert (r.cost_bearer == "supplier") == (r.supplier_id is not None)
        if r.reason not in FAULTS:
            assert r.cost_bearer == "merchant", r
        elif after.plans[r.order_id].order["status"] == "delivered":
            assert r.cost_bearer == "supplier", r  # it shipped: the supplier bears a fault
    for r in refunds:  # never more than the customer paid, and the order says so
        total = paid[(r.channel, r.external_id)]
        assert per_order[r.order_id] <= total, (r.order_id, per_order[r.order_id], total)
        assert r.refunded_total == per_order[r.order_id], r
    for order_id, plan in after.plans.items():
        if plan.kind in ("twice", "partials") or plan.return_status == "refunded":
            total = paid[(plan.order["channel"], plan.order["external_id"])]
            assert per_order[order_id] == total, (plan.kind, per_order[order_id], total)

    await _check_returns(dbs, after, issued)
    supplier_borne = {
        r.id: (r.supplier_id, r.amount) for r in refunds if r.cost_bearer == "supplier"
    }
    charged = await rows(
        dbs["supplier"], "SELECT refund_id, supplier_id, amount FROM supplier_chargeback"
    )
    assert {c.refund_id: (c.supplier_id, c.amount) for c in charged} == supplier_borne
    assert supplier_borne, "supplier-fault refunds of shipped goods were charged back"
    await _check_notices(dbs, set(by_id), mailbox)
    marketplace = await _check_shops(c, market, refunds)
    await _check_kpis(c, urls["metrics"], refunds)
    reasons = Counter(r.reason for r in refunds)
    return (
        f"{len(refunds)} refunds on {len(per_order)} orders ({marketplace} told to shops, "
        f"{len(supplier_borne)} charged back; {dict(reasons)}), "
        f"after-sales errors while services were down: {dict(after.errors)}"
    )


async def _check_returns(dbs: dict[str, str], after: RefundStorm, issued: dict[str, Ask]) -> None:
    """Each return plan made one return; a refunded one names the refund that closed it."""
    returned = await rows(dbs["order"], "SELECT id, order_id, status, refund_id FROM order_return")
    plans = {p.return_id: p for p in after.plans.values() if p.return_id}
    assert {r.id: (r.order_id, r.status) for r in returned} == {
        rid: (p.order["id"], p.return_status) for rid, p in plans.items()
    }
    for r in returned:
        if r.status == "refunded":
            assert issued[r.refund_id].body == {"return_id": r.id}


async def _check_notices(dbs: dict[str, str], refund_ids: set[str], mailbox: Any) -> None:
    """One refund notice per refund, sent; the mailbox has it (a copy only with the same
    Message-ID, after a crash between SMTP's acceptance and the notice's commit)."""
    notices = await rows(
        dbs["notify"],
        "SELECT id, reason, status, channel FROM notification WHERE kind = 'refund_issued'",
    )
    per_refund = Counter(n.reason for n in notices)
    assert per_refund == Counter(refund_ids), per_refund
    assert {(n.status, n.channel) for n in notices} == {("sent", "email")}, notices
    copies = Counter(m["Message-ID"].strip("<>").split("@")[0] for m in mailbox.messages)
    assert all(copies[n.id] >= 1 for n in notices), "a refund notice was not e-mailed"


async def _check_shops(c: httpx.AsyncClient, market: str, refunds: list[Any]) -> int:
    """Each refund of a marketplace order is at its shop exactly once, found by its marker."""
    notes: Counter[tuple[str, str]] = Counter()
    for shop in SHOPS:
        state = (await c.get(f"{market}/_control/shops/{shop}")).json()
        for external_id, order in state["orders"].items():
            for refund in order.get("refunds") or []:
                text_ = str(refund.get("note") or refund.get("reason") or "")
                for r in refunds:
                    if f"[dropship {r.id}]" in text_:
                        notes[(external_id, r.id)] += 1
    wanted = {(r.external_id, r.id) for r in refunds if r.channel != "storefront"}
    assert set(notes) == wanted, set(notes) ^ wanted
    assert set(notes.values()) <= {1}, f"refunds told to a shop twice: {notes}"
    return len(wanted)


async def _check_kpis(c: httpx.AsyncClient, metrics: str, refunds: list[Any]) -> None:
    """`GET /v1/kpis/after-sales` counts exactly the order service's refunds."""
    report = await c.get(
        metrics + "/v1/kpis/after-sales", params={"group_by": "channel"}, headers=API_KEY
    )
    assert report.status_code == 200, report.text
    body = report.json()

    def money(amounts: dict[str, str]) -> Decimal:
        assert set(amounts) <= {"USD"}, amounts
        return Decimal(amounts.get("USD", "0"))

    def agrees(item: dict[str, Any], these: list[Any]) -> None:
        assert item["refunds"] == len(these), (item["key"], item["refunds"], len(these))
        assert item["refunded_orders"] == len({r.order_id for r in these})
        assert money(item["refund_amount"]) == sum((r.amount for r in these), Decimal(0))
        for bearer in ("merchant", "supplier"):
            borne = sum((r.amount for r in these if r.cost_bearer == bearer), Decimal(0))
            assert money(item["refund_cost_by_bearer"][bearer]) == borne, (bearer, item)
        for reason in ReturnReason:
            of = [r for r in these if r.reason == reason.value]
            got = item["refunds_by_reason"].get(reason.value)
            assert (got["refunds"] if got else 0) == len(of), (reason, item)
            assert (money(got["amount"]) if got else 0) == sum((r.amount for r in of), Decimal(0))

    agrees(body["total"], refunds)
    channels = {i["key"]: i for i in body["items"]}
    for channel in {r.channel for r in refunds}:
        agrees(channels[channel], [r for r in refunds if r.channel == channel])
