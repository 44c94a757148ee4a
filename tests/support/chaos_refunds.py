"""Refunds and returns during the chaos storm (`tests/e2e/test_chaos.py`), as a merchant's
client makes them: every request retried until answered, under the same Idempotency-Key.

Each plan works on one order of the storm, picked through the order API:
- `twice`: a full refund by lines, sent three times at once and once more later;
- `partials`: two partial amounts (each repeated), one that exceeds what remains (409),
  then exactly the rest;
- `rivals`: two refunds of 60% each under different keys at once: one wins, one gets 409;
- `return`: a return of a delivered order (damaged, wrong or not as described),
  authorised (the supplier's RMA), received and refunded by its id (repeated).

`tests.support.chaos_refunds_check.check_refunds` then holds the databases, the
mailbox, the shops and the after-sales KPIs to what these requests were answered.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal
from typing import Any

import httpx

from shared.events import SUPPLIER_FAULTS, ReturnReason
from shared.testing import eventually
from tests.support.data import API_KEY

CENT = Decimal("0.01")
REASONS = tuple(r.value for r in ReturnReason)
FAULTS = tuple(sorted(r.value for r in SUPPLIER_FAULTS))
PLANS = ("twice", "partials", "rivals", "return")
CHANNELS = ("storefront", "shopify", "woocommerce")
STEP_S = 240.0
"""How long one step may wait for an answer across the kills and restarts."""


@dataclass
class Ask:
    """One refund request under one Idempotency-Key, and every answer it got."""

    key: str
    order_id: str
    body: dict[str, Any]
    expect: str
    """`issued` (201), `exceeds` (409 refund_exceeds_paid) or `rival` (one of a pair wins)."""
    answers: list[tuple[int, dict[str, Any], bool]] = field(default_factory=list)
    """(status, body, replayed) of every answer that was not a failure to retry."""

    def refund_ids(self) -> set[str]:
        return {body["id"] for status, body, _ in self.answers if status == 201}


@dataclass
class Plan:
    kind: str
    order: dict[str, Any]
    asks: list[Ask] = field(default_factory=list)
    return_id: str | None = None
    return_status: str | None = None


class RefundStorm:
    """Starts after-sales plans during the storm; each plan is a task of its own."""

    def __init__(self, c: httpx.AsyncClient, order_url: str, rng: random.Random, seed: int) -> None:
        self.c, self.url, self.rng, self.seed = c, order_url, rng, seed
        self.plans: dict[str, Plan] = {}  # order id -> its plan
        self.tasks: list[asyncio.Task[None]] = []
        self.errors: Counter[str] = Counter()
        self.due = False

    @property
    def asks(self) -> list[Ask]:
        return [a for p in self.plans.values() for a in p.asks]

    async def tick(self, *, chance: float = 0.1, most: int = 50) -> None:
        """Called once per round of the storm: now and then, start one more plan (one
        read of the order list, only when a plan is due, so the storm's load stays)."""
        self.due = self.due or self.rng.random() < chance
        if self.due and len(self.tasks) < most and await self._start():
            self.due = False

    async def finish(self, at_least: int = 2 * len(PLANS)) -> None:
        """Start plans until `at_least` (a short storm still tries each twice), then wait
        for every plan to be answered to the end."""

        async def enough() -> bool:
            while len(self.tasks) < at_least and await self._start():
                pass
            return len(self.tasks) >= at_least

        await eventually(enough, timeout=STEP_S, interval=1.0, what="orders for after-sales")
        await asyncio.gather(*self.tasks)

    async def _start(self) -> bool:
        """Start plan n on a storm order no plan has taken: delivered ones for a return,
        delivered and confirmed ones in turn otherwise, of each channel in turn if it can."""
        n = len(self.tasks)
        kind = PLANS[n % len(PLANS)]
        try:
            r = await self.c.get(f"{self.url}/v1/orders", params={"limit": "100"}, headers=API_KEY)
        except httpx.HTTPError:
            return False
        if r.status_code != 200:
            return False
        wanted = ("delivered",) if kind == "return" else ("delivered", "confirmed")
        free = [o for o in r.json()["items"] if o["status"] in wanted and o["id"] not in self.plans]
        status = ("delivered", "confirmed")[(n // len(PLANS)) % 2]
        free = [o for o in free if o["status"] == status] or free
        free = [o for o in free if o["channel"] == CHANNELS[n % len(CHANNELS)]] or free
        if not free:
            return False
        order = self.rng.choice(free)
        plan = self.plans[order["id"]] = Plan(kind, order)
        self.tasks.append(asyncio.create_task(getattr(self, f"_{kind}")(plan, n)))
        return True

    def _ask(self, plan: Plan, body: dict[str, Any], expect: str, n: int) -> Ask:
        ask = Ask(f"chaos-refund-{self.seed}-{n}-{len(plan.asks)}", plan.order["id"], body, expect)
        plan.asks.append(ask)
        return ask

    async def _attempt(self, ask: Ask) -> bool:
        headers = {**API_KEY, "Idempotency-Key": ask.key}
        url = f"{self.url}/v1/orders/{ask.order_id}/refunds"
        try:
            r = await self.c.post(url, json=ask.body, headers=headers)
        except httpx.HTTPError as exc:  # the order service is down: retry, same key
            self.errors[type(exc).__name__] += 1
            return False
        if r.status_code >= 500 or r.status_code == 429:
            self.errors[f"HTTP {r.status_code}"] += 1
            return False
        replayed = r.headers.get("Idempotent-Replayed") == "true"
        ask.answers.append((r.status_code, r.json(), replayed))
        return True

    async def _send(self, ask: Ask) -> None:
        """One request, retried like a client until it is answered."""
        await eventually(
            lambda: self._attempt(ask), timeout=STEP_S, interval=0.5, what=f"refund {ask.key}"
        )

    async def _twice(self, plan: Plan, n: int) -> None:
        lines = [
            {"line_id": ln["line_id"], "quantity": ln["quantity"]} for ln in plan.order["lines"]
        ]
        ask = self._ask(plan, {"lines": lines, "reason": self.rng.choice(REASONS)}, "issued", n)
        await asyncio.gather(*(self._send(ask) for _ in range(3)))  # concurrent duplicates
        await self._send(ask)  # and the same request again, later

    async def _partials(self, plan: Plan, n: int) -> None:
        total, reason = Decimal(plan.order["total"]), self.rng.choice(REASONS)
        part = max(CENT, (total * Decimal("0.3")).quantize(CENT, ROUND_DOWN))
        for _ in range(2):
            ask = self._ask(plan, {"amount": str(part), "reason": reason}, "issued", n)
            await self._send(ask)
            await self._send(ask)
        rest = total - 2 * part
        over = self._ask(plan, {"amount": str(rest + CENT), "reason": reason}, "exceeds", n)
        await self._send(over)
        await self._send(self._ask(plan, {"amount": str(rest), "reason": reason}, "issued", n))

    async def _rivals(self, plan: Plan, n: int) -> None:
        total, reason = Decimal(plan.order["total"]), self.rng.choice(REASONS)
        share = str((total * Decimal("0.6")).quantize(CENT, ROUND_DOWN))
        pair = [self._ask(plan, {"amount": share, "reason": reason}, "rival", n) for _ in "ab"]
        await asyncio.gather(*(self._send(a) for a in pair))

    async def _return(self, plan: Plan, n: int) -> None:
        lines = [
            {"line_id": ln["line_id"], "quantity": ln["quantity"]} for ln in plan.order["lines"]
        ]
        reason = self.rng.choice(FAULTS)
        plan.return_id = await eventually(
            lambda: self._open_return(plan.order["id"], lines, reason),
            timeout=STEP_S,
            interval=0.5,
            what=f"a return of {plan.order['id']}",
        )
        for step, status in (("authorize", "authorized"), ("receive", "received")):
            plan.return_status = await eventually(
                lambda step=step, status=status: self._move(plan.return_id or "", step, status),
                timeout=STEP_S,
                interval=0.5,
                what=f"{step} return {plan.return_id}",
            )
            if plan.return_status == "rejected":  # the supplier refused an RMA: no refund
                return
        ask = self._ask(plan, {"return_id": plan.return_id}, "issued", n)
        await self._send(ask)
        await self._send(ask)
        plan.return_status = "refunded"

    async def _open_return(
        self, order_id: str, lines: list[dict[str, Any]], reason: str
    ) -> str | None:
        """The order's return: found first, since an answer lost to a kill may have made it."""
        try:
            found = await self.c.get(
                f"{self.url}/v1/returns", params={"order_id": order_id}, headers=API_KEY
            )
            if found.status_code != 200:
                return None
            if found.json()["items"]:
                return str(found.json()["items"][0]["id"])
            r = await self.c.post(
                f"{self.url}/v1/orders/{order_id}/returns",
                json={"lines": lines, "reason": reason},
                headers=API_KEY,
            )
        except httpx.HTTPError:
            return None
        assert r.status_code in (201, 429) or r.status_code >= 500, r.text
        return str(r.json()["id"]) if r.status_code == 201 else None

    async def _move(self, return_id: str, step: str, status: str) -> str | None:
        """`status` once the step is done (`rejected` if the supplier refused), or None."""
        url = f"{self.url}/v1/returns/{return_id}"
        try:
            r = await self.c.post(f"{url}/{step}", json={}, headers=API_KEY)
            if r.status_code == 409:  # an answer lost to a kill: the step may be done
                r = await self.c.get(url, headers=API_KEY)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            assert r.status_code == 429 or r.status_code >= 500, r.text
            return None
        now = str(r.json()["status"])
        assert now in (status, "rejected"), r.text
        return now
