"""Refunds: never more than was paid, each line at most once over, who bears the cost. No I/O."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from services.order.aftersales.domain.returns import ItemQty, Return, paid, shipped_lines
from services.order.aftersales.errors import InvalidAfterSales, RefundExceedsPaid
from services.order.domain import Order
from shared.events import SUPPLIER_FAULTS, CostBearer, RefundIssued, RefundLine, ReturnReason
from shared.money import format_amount, minor_units


# -- refunds ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RefundAsk:
    """What a refund request asks for: an amount, lines, or both; a reason or a return."""

    amount: Decimal | None
    lines: tuple[ItemQty, ...]
    reason: ReturnReason | None
    return_id: str | None = None


@dataclass(frozen=True)
class Refund:
    id: str
    order_id: str
    return_id: str | None
    amount: Decimal
    currency: str
    reason: ReturnReason
    lines: tuple[RefundLine, ...]
    cost_bearer: CostBearer
    supplier_id: str | None
    channel: str
    issued_at: datetime

    def event(self) -> RefundIssued:
        return RefundIssued(
            order_id=self.order_id,
            refund_id=self.id,
            return_id=self.return_id,
            amount=self.amount,
            currency=self.currency,
            reason=self.reason,
            lines=list(self.lines),
            cost_bearer=self.cost_bearer,
            supplier_id=self.supplier_id,
            channel=self.channel,
            issued_at=self.issued_at,
        )


def refunded_total(refunds: Sequence[Refund]) -> Decimal:
    return sum((r.amount for r in refunds), Decimal(0))


def remaining(order: Order, refunds: Sequence[Refund]) -> Decimal:
    """What may still be refunded of what the customer paid."""
    return paid(order) - refunded_total(refunds)


def issue_refund(
    order: Order,
    earlier: Sequence[Refund],
    ask: RefundAsk,
    ret: Return | None,
    now: datetime,
) -> Refund:
    """The refund `ask` comes to, or why not: `InvalidAfterSales` (a field, 422),
    `ReturnStatusConflict` (the return is not authorized or received), `RefundExceedsPaid`."""
    cur = order.currency
    problems: list[tuple[str, str]] = []
    reason = ask.reason or (ret.reason if ret else None)
    if reason is None:
        problems.append(("reason", "required unless return_id is given"))
    if ret is not None:
        ret.check("refund")
    items = ask.lines or (
        tuple(ItemQty(ln.line_id, ln.quantity) for ln in ret.lines) if ret else ()
    )
    lines_value, problems = _check_lines(order, earlier, items, ret, problems)
    amount = ask.amount if ask.amount is not None else lines_value
    if problems:
        pass  # the lines' value is unknown: the amount is judged once they are right
    elif ask.amount is None and not items:
        problems.append(("amount", "required unless lines (or a return) are given"))
    elif amount <= 0:
        problems.append(("amount", "must be more than 0"))
    else:
        exponent = amount.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > minor_units(cur):
            problems.append(("amount", f"{cur} amounts have at most {minor_units(cur)} decimals"))
        elif items and amount > lines_value:
            problems.append(
                ("amount", f"at most {format_amount(lines_value, cur)} for the lines refunded")
            )
    if problems:
        raise InvalidAfterSales(problems)
    left = remaining(order, earlier)
    if amount > left:
        raise RefundExceedsPaid(
            format_amount(amount, cur),
            format_amount(left, cur),
            format_amount(paid(order), cur),
            cur,
        )
    assert reason is not None
    bearer, supplier = _cost(order, reason, items, ret)
    shipped = shipped_lines(order)
    by_id = {ln.line_id: ln for ln in order.lines}
    return Refund(
        id=f"rfd_{uuid.uuid4().hex}",
        order_id=order.id,
        return_id=ret.id if ret else None,
        amount=amount,
        currency=cur,
        reason=reason,
        lines=tuple(
            RefundLine(
                line_id=i.line_id,
                quantity=i.quantity,
                supplier_id=shipped[i.line_id][1]
                if i.line_id in shipped
                else by_id[i.line_id].supplier_id,
            )
            for i in items
        ),
        cost_bearer=bearer,
        supplier_id=supplier,
        channel=order.channel,
        issued_at=now,
    )


def _check_lines(
    order: Order,
    earlier: Sequence[Refund],
    items: Sequence[ItemQty],
    ret: Return | None,
    problems: list[tuple[str, str]],
) -> tuple[Decimal, list[tuple[str, str]]]:
    """The lines' value at their price; each line's quantity within what is left of it."""
    by_id = {ln.line_id: ln for ln in order.lines}
    done: Counter[str] = Counter()
    for earlier_refund in earlier:
        for refunded in earlier_refund.lines:
            done[refunded.line_id] += refunded.quantity
    in_return = {ln.line_id: ln.quantity for ln in ret.lines} if ret else None
    value, seen = Decimal(0), set[str]()
    for i, item in enumerate(items):
        line = by_id.get(item.line_id)
        if item.line_id in seen:
            problems.append((f"lines.{i}.line_id", "appears twice; send one entry per line"))
        elif line is None:
            problems.append((f"lines.{i}.line_id", f"not a line of order {order.id}"))
        elif in_return is not None and item.quantity > in_return.get(item.line_id, 0):
            problems.append(
                (f"lines.{i}.quantity", f"at most {in_return.get(item.line_id, 0)} in the return")
            )
        elif item.quantity > line.quantity - done[item.line_id]:
            problems.append(
                (
                    f"lines.{i}.quantity",
                    f"at most {line.quantity - done[item.line_id]} left to refund "
                    f"({line.quantity} ordered, {done[item.line_id]} refunded)",
                )
            )
        else:
            value += line.unit_price * item.quantity
        seen.add(item.line_id)
    return value, problems


def _cost(
    order: Order, reason: ReturnReason, items: Sequence[ItemQty], ret: Return | None
) -> tuple[CostBearer, str | None]:
    """Who bears the refund: the supplier that shipped the goods, for a supplier fault."""
    if reason not in SUPPLIER_FAULTS:
        return CostBearer.MERCHANT, None
    if ret is not None and ret.supplier_id:
        return CostBearer.SUPPLIER, ret.supplier_id
    shipped = shipped_lines(order)
    wanted = [i.line_id for i in items] or list(shipped)
    suppliers = sorted({s for lid in wanted if lid in shipped and (s := shipped[lid][1])})
    if not suppliers:
        return CostBearer.MERCHANT, None  # nothing shipped: no supplier to charge back
    if len(suppliers) > 1:
        raise InvalidAfterSales(
            [("lines", f"shipped by suppliers {', '.join(suppliers)}: name lines of one")],
            f"the supplier bears a {reason.value} refund, and these goods were shipped by "
            f"{', '.join(suppliers)}: refund the lines of one supplier at a time",
        )
    return CostBearer.SUPPLIER, suppliers[0]
