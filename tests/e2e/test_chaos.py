"""Chaos with a checker: the whole system under a steady stream of orders while every
process is killed with SIGKILL in turn, a supplier fails half its calls for a while,
and marketplace webhooks (Shopify and WooCommerce, from the demo shops) arrive twice and
out of order. Then the system settles and the history is checked against the databases,
the simulators (every shipment of a marketplace order written back to its shop exactly
once) and the mailbox. Refunds and returns are issued mid-storm, retried and duplicated
under their Idempotency-Keys (`tests.support.chaos_refunds`), and checked too.

Seeded and reproducible: `DROPSHIP_CHAOS_SEED` picks the orders, the duplicates and
the fault schedule; `DROPSHIP_CHAOS_SECONDS` how long the storm lasts (30 s in
`make test`, 300 s in `make chaos`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import signal
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.asyncapi import FLOWS
from shared.infra import free_port
from shared.testing import eventually
from tests.e2e.test_story import SERVICES, SHOPIFY_SECRET, add_supplier, system
from tests.support.chaos_refunds import RefundStorm
from tests.support.chaos_refunds_check import check_refunds, rows
from tests.support.data import API_KEY
from tests.support.notify import smtp_server

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "shopify"
WOO_FIXTURES = FIXTURES.parent / "woocommerce"
WOO_SECRET = "woo_chaos_secret"
WRITTEN_BACK = ("fulfillmentCreate", "notes.create")
"""The marketplace simulator's record of a shipment told to its shop (Shopify, WooCommerce)."""
SECONDS = float(os.environ.get("DROPSHIP_CHAOS_SECONDS", "30"))
SEED = int(os.environ.get("DROPSHIP_CHAOS_SEED", "20261123"))
SKUS = {"CHAOS-A": Decimal("10.00"), "CHAOS-B": Decimal("7.50")}


def pid_listening_on(port: int) -> int | None:
    """The uvicorn child serving `port` (its command line carries `--port <port>`)."""
    needle = f"--port\0{port}\0".encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    return int(entry.name)
    return None


def shopify(order_id: int, sku: str, quantity: int) -> tuple[bytes, dict[str, str]]:
    order = json.loads((FIXTURES / "orders_create.json").read_text())
    order["id"] = order_id
    order["name"] = f"#{order_id % 100000}"
    line = {**order["line_items"][0], "sku": sku, "quantity": quantity, "price": str(SKUS[sku])}
    order["line_items"] = [line]
    body = json.dumps(order).encode()
    mac = base64.b64encode(hmac.new(SHOPIFY_SECRET.encode(), body, hashlib.sha256).digest())
    return body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": mac.decode(),
        "X-Shopify-Webhook-Id": f"wh-{order_id}",
        "X-Shopify-Shop-Domain": "maple-and-pine-goods.myshopify.com",
    }


def woocommerce(order_id: int, sku: str, quantity: int) -> tuple[bytes, dict[str, str]]:
    order = json.loads((WOO_FIXTURES / "order_created.json").read_text())
    order["id"], order["number"], order["currency"] = order_id, str(order_id), "USD"
    total = str(SKUS[sku] * quantity)
    line = {**order["line_items"][0], "sku": sku, "quantity": quantity,
            "price": float(SKUS[sku]), "subtotal": total, "total": total}  # fmt: skip
    order["line_items"] = [line]
    body = json.dumps(order).encode()
    mac = base64.b64encode(hmac.new(WOO_SECRET.encode(), body, hashlib.sha256).digest())
    return body, {
        "Content-Type": "application/json",
        "X-WC-Webhook-Topic": "order.created",
        "X-WC-Webhook-Signature": mac.decode(),
        "X-WC-Webhook-Delivery-ID": str(order_id),
        "X-WC-Webhook-Source": "https://woo.maple-and-pine.example/",
    }


class Storm:
    """Places orders at a steady rate and records what the outside world was told."""

    def __init__(self, c: httpx.AsyncClient, urls: dict[str, str], rng: random.Random) -> None:
        self.c, self.urls, self.rng = c, urls, rng
        self.accepted: dict[str, Decimal] = {}  # storefront external id -> total
        self.shopify: dict[int, Decimal] = {}  # marketplace id -> total
        self.woocommerce: dict[int, Decimal] = {}
        self.redeliver: list[tuple[str, bytes, dict[str, str]]] = []
        self.sim_seen: dict[str, set[str]] = {}
        self.errors: Counter[str] = Counter()
        self.retry: list[tuple[str, bytes, dict[str, str], str | None]] = []
        self.held: set[str] = set()  # storefront external ids sent with an impossible address
        self.bad_ship_to: list[tuple[str, str]] = []  # (supplier key, idempotency key)

    async def place_one(self, n: int) -> None:
        sku = self.rng.choice(sorted(SKUS))
        quantity = self.rng.randint(1, 3)
        total = SKUS[sku] * quantity
        if self.rng.random() < 0.4:
            woo = self.rng.random() < 0.25  # a quarter of the marketplace orders
            marketplace_id = (90_000_000 if woo else 8_000_000_000_000) + n
            make, orders = (woocommerce, self.woocommerce) if woo else (shopify, self.shopify)
            body, headers = make(marketplace_id, sku, quantity)
            orders[marketplace_id] = total
            path = "/v1/webhooks/woocommerce" if woo else "/v1/webhooks/shopify"
            if self.rng.random() < 0.5:  # delivered again, later, after other orders
                self.redeliver.append((path, body, headers))
            request = (path, body, headers, None)
        else:
            key = f"chaos-{SEED}-{n}"
            # one order in ten has a postcode China's rules refuse: accepted, held, never routed
            held = self.rng.random() < 0.1
            order = {
                "channel": "storefront",
                "external_id": key,
                "currency": "USD",
                "customer": {"name": "Li Wei", "email": f"li{n}@example.com", "locale": "zh-CN"},
                "shipping_address": {
                    "line1": "1 Road",
                    "city": "Hangzhou",
                    "region": "Zhejiang",
                    "postal_code": "ABC" if held else "310000",
                    "country": "CN",
                },
                "lines": [{"sku": sku, "quantity": quantity, "unit_price": str(SKUS[sku])}],
            }
            self.accepted[key] = total
            if held:
                self.held.add(key)
            headers = {**API_KEY, "Idempotency-Key": key, "Content-Type": "application/json"}
            request = ("/v1/orders", json.dumps(order).encode(), headers, key)
        if not await self.submit(request):
            self.retry.append(request)

    async def submit(self, request: tuple[str, bytes, dict[str, str], str | None]) -> bool:
        """One delivery; like a real client (or Shopify) we retry until we get an answer."""
        path, body, headers, _ = request
        try:
            r = await self.c.post(self.urls["order"] + path, content=body, headers=headers)
        except httpx.HTTPError as exc:  # the order service is down right now
            self.errors[type(exc).__name__] += 1
            return False
        if r.status_code >= 500 or r.status_code == 429:
            self.errors[f"HTTP {r.status_code}"] += 1
            return False
        assert r.status_code in (200, 201), r.text
        return True

    async def drain_retries(self) -> None:
        pending, self.retry = self.retry, []
        for request in pending:
            if not await self.submit(request):
                self.retry.append(request)

    async def snapshot_simulator(self) -> None:
        """The simulator forgets on restart: keep every idempotency key it ever reported."""
        for key in ("chaos-a", "chaos-b"):
            with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                r = await self.c.get(f"{self.urls['simulator']}/_control/{key}/orders")
                items = r.json()["items"]
                seen = [o["idempotency_key"] for o in items]
                # every supplier order carried a complete ship-to
                self.bad_ship_to += [
                    (key, o["idempotency_key"])
                    for o in items
                    if not all(
                        (o.get("ship_to") or {}).get(f)
                        for f in ("name", "line1", "city", "postal_code", "country")
                    )
                ]
                assert len(seen) == len(set(seen)), f"{key} received an order twice"
                self.sim_seen.setdefault(key, set()).update(seen)


@pytest.mark.timeout(900)  # storm, then up to 300 s to settle
@pytest.mark.parametrize("backend", ["postgresql"])
async def test_chaos_loses_nothing_and_does_nothing_twice(backend, database_url, tmp_path):
    rng = random.Random(SEED)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    env |= {
        "DROPSHIP_DATA_DIR": str(tmp_path / "var"),
        "DROPSHIP_EMBEDDED_KAFKA_PORT": str(free_port()),
        "DROPSHIP_CONSOLE_PORT": str(free_port()),
        "DROPSHIP_MARKETPLACE_SIM_PORT": str(free_port()),
        "DROPSHIP_SHOPIFY_SECRET": SHOPIFY_SECRET,
        "DROPSHIP_WOOCOMMERCE_SECRET": WOO_SECRET,
        # write-backs: a lease cut by a kill of the order service runs out quickly
        "DROPSHIP_WRITEBACK_POLL_S": "0.2",
        "DROPSHIP_WRITEBACK_LEASE_S": "5",
        "DROPSHIP_SLA_SCAN_INTERVAL_S": "0.5",
        "DROPSHIP_DIGEST_WINDOW_S": "0.2",
        "DROPSHIP_SENDER_POLL_S": "0.2",
        "DROPSHIP_SEND_LEASE_S": "5",
        "DROPSHIP_SEND_BACKOFF_S": "0.2",
        "DROPSHIP_SEND_BACKOFF_MAX_S": "2",
        # a killed simulator opens every supplier's breaker; a short cool-down lets the
        # storm go on routing instead of failing every order for 30 s
        "DROPSHIP_BREAKER_COOLDOWN_S": "2",
        "DROPSHIP_METRICS_KPI_CACHE_S": "0",  # the checker compares against fresh KPIs
    }
    for name in SERVICES:
        env[f"DROPSHIP_{name.upper()}_PORT"] = str(free_port())
    dbs = {name: await database_url(name) for name in SERVICES[:4]}
    for name, url in dbs.items():
        env[f"DROPSHIP_{name.upper()}_DATABASE_URL"] = url

    market = f"http://127.0.0.1:{env['DROPSHIP_MARKETPLACE_SIM_PORT']}"
    with smtp_server() as (mailbox, smtp_port):
        env["DROPSHIP_SMTP_URL"] = f"smtp://127.0.0.1:{smtp_port}"
        async with system(env, tmp_path / "up.log") as urls, httpx.AsyncClient(timeout=10) as c:
            # marketplace orders come from the demo shops: they must be registered first
            await eventually(
                lambda: demo_shops(c, urls["order"]), timeout=60, what="demo shops registered"
            )
            # two suppliers offer both SKUs; the slow one never ships within its 6 s window
            # chaos-a has only CHAOS-A; chaos-b has both, so every CHAOS-B line goes to it
            await add_supplier(c, urls, "chaos-a", 1, {"CHAOS-A": "3.00"}, sla_hours=1.0)
            await add_supplier(c, urls, "chaos-b", 2, {s: "3.50" for s in SKUS}, sla_hours=6 / 3600)
            await c.put(f"{urls['simulator']}/_control/chaos-b", json={"never_ship": True})
            storm = Storm(c, urls, rng)
            after_sales = RefundStorm(c, urls["order"], random.Random(SEED + 1), SEED)
            victims = list(SERVICES)
            rng.shuffle(victims)
            fault_at = {SECONDS * (i + 1) / (len(victims) + 1): v for i, v in enumerate(victims)}
            flaky = (SECONDS * 0.2, SECONDS * 0.6)  # chaos-a fails half its calls meanwhile
            start, n, flaky_on = time.monotonic(), 0, False
            while (elapsed := time.monotonic() - start) < SECONDS:
                for at in [a for a in fault_at if a <= elapsed]:
                    victim = fault_at.pop(at)
                    if victim == "simulator":
                        await storm.snapshot_simulator()
                    pid = pid_listening_on(int(env[f"DROPSHIP_{victim.upper()}_PORT"]))
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                if not flaky_on and flaky[0] <= elapsed < flaky[1]:
                    flaky_on = True
                    with contextlib.suppress(httpx.HTTPError):
                        await c.put(
                            f"{urls['simulator']}/_control/chaos-a", json={"fail_http_rate": 0.5}
                        )
                elif flaky_on and elapsed >= flaky[1]:
                    flaky_on = False
                    with contextlib.suppress(httpx.HTTPError):
                        await c.put(
                            f"{urls['simulator']}/_control/chaos-a", json={"fail_http_rate": 0.0}
                        )
                # a restarted simulator forgets its settings; the slow supplier stays slow
                with contextlib.suppress(httpx.HTTPError):
                    await c.put(f"{urls['simulator']}/_control/chaos-b", json={"never_ship": True})
                await asyncio.gather(*(storm.place_one(n + i) for i in range(2)))
                n += 2
                await after_sales.tick()
                await storm.drain_retries()
                if storm.redeliver and rng.random() < 0.3:
                    path, body, headers = storm.redeliver.pop(rng.randrange(len(storm.redeliver)))
                    with contextlib.suppress(httpx.HTTPError):
                        await c.post(urls["order"] + path, content=body, headers=headers)
                await asyncio.sleep(0.4)
            for path, body, headers in storm.redeliver:  # the rest of the duplicates, at the end
                with contextlib.suppress(httpx.HTTPError):
                    await c.post(urls["order"] + path, content=body, headers=headers)

            async def all_answered() -> bool:
                await storm.drain_retries()
                return not storm.retry

            await eventually(all_answered, timeout=60, interval=0.5, what="every order answered")

            async def simulator_steered() -> bool:
                # a simulator killed late may come back after the storm: steer it once more
                with contextlib.suppress(httpx.HTTPError):
                    slow = await c.put(
                        f"{urls['simulator']}/_control/chaos-b", json={"never_ship": True}
                    )
                    steady = await c.put(
                        f"{urls['simulator']}/_control/chaos-a", json={"fail_http_rate": 0.0}
                    )
                    return slow.status_code == steady.status_code == 200
                return False

            await eventually(simulator_steered, timeout=120, interval=0.5, what="simulator back")
            await after_sales.finish()
            await settle(c, urls, dbs, storm, tmp_path / "up.log")
            await storm.snapshot_simulator()
            await check_write_backs(c, market, dbs)
            print(await check_refunds(c, urls, market, dbs, storm, after_sales, mailbox))
            kpis = (
                await c.get(
                    urls["metrics"] + "/v1/kpis", params={"group_by": "supplier"}, headers=API_KEY
                )
            ).json()
    await check(dbs, storm, mailbox, kpis)


async def demo_shops(c: httpx.AsyncClient, order_url: str) -> bool:
    response = await c.get(order_url + "/v1/shops", headers=API_KEY)
    return response.status_code == 200 and len(response.json()["items"]) == 2


async def check_write_backs(c: httpx.AsyncClient, market: str, dbs: dict[str, str]) -> None:
    """Every shipment of a marketplace order reaches its shop exactly once, nothing else
    does, and no write-back gives up, although the order service was killed mid-storm.
    Shipments may still be arriving (the supplier ships on its own clock): wait until the
    shops have been told of every shipment recorded so far."""
    seen: dict[str, Any] = {}

    async def told_everything() -> bool:
        shipped = await rows(
            dbs["order"],
            "SELECT o.channel, o.external_id, s.tracking_number FROM shipment s "
            "JOIN customer_order o ON o.id = s.order_id "
            "WHERE o.channel IN ('shopify', 'woocommerce')",
        )
        calls = (await c.get(f"{market}/_control/calls")).json()["items"]
        seen["told"] = Counter(
            (i["order_external_id"], i["tracking_number"])
            for i in calls
            if i["operation"] in WRITTEN_BACK
        )
        seen["shipped"] = {(r.external_id, r.tracking_number) for r in shipped}
        seen["channels"] = {r.channel for r in shipped}
        return set(seen["told"]) == seen["shipped"]

    try:
        await eventually(told_everything, timeout=120, interval=0.5, what="shops told")
    except AssertionError as exc:
        missing = seen["shipped"] - set(seen["told"])
        extra = set(seen["told"]) - seen["shipped"]
        raise AssertionError(f"write-backs missing {missing}, unexpected {extra}") from exc
    assert seen["channels"] == {"shopify", "woocommerce"}, "marketplace orders shipped"
    twice = {k: n for k, n in seen["told"].items() if n > 1}
    assert not twice, f"shipments written back more than once: {twice}"
    given_up = await rows(
        dbs["order"], "SELECT kind, last_error FROM marketplace_writeback WHERE status = 'failed'"
    )
    assert not given_up, f"write-backs given up: {given_up}"


CONSUMES = {
    service: tuple(t for t, flow in FLOWS.items() if service in flow.consumers)
    for service in ("order", "supplier", "notify", "metrics")
}
"""What each service consumes, from the catalogue (`shared.asyncapi.FLOWS`)."""


async def unconsumed(dbs: dict[str, str]) -> dict[str, dict[str, int]]:
    """Per service and topic, events produced (any outbox) but not applied (its inbox)."""
    produced: Counter[str] = Counter()
    for url in dbs.values():
        for topic, n in await rows(url, "SELECT topic, count(*) FROM outbox_event GROUP BY topic"):
            produced[topic] += n
    missing: dict[str, dict[str, int]] = {}
    for service, topics in CONSUMES.items():
        applied = dict(
            await rows(dbs[service], "SELECT topic, count(*) FROM inbox_event GROUP BY topic")
        )
        gaps = {
            t: n - applied.get(t, 0)
            for t, n in produced.items()
            if t in topics and n != applied.get(t, 0)
        }
        if gaps:
            missing[service] = gaps
    return missing


async def settle(
    c: httpx.AsyncClient, urls: dict[str, str], dbs: dict[str, str], storm: Storm, log: Path
) -> None:
    expected = len(storm.accepted) + len(storm.shopify) + len(storm.woocommerce)

    state: dict[str, Any] = {}

    async def quiet() -> bool:
        state["outbox backlog"] = [
            (await rows(url, "SELECT count(*) FROM outbox_event WHERE published_at IS NULL"))[0][0]
            for url in dbs.values()
        ]
        orders = await rows(dbs["order"], "SELECT status FROM customer_order")
        state["orders"] = Counter(s for (s,) in orders)
        state["expected orders"] = expected
        state["supplier orders"] = dict(
            await rows(dbs["supplier"], "SELECT state, count(*) FROM supplier_order GROUP BY state")
        )
        state["notifications"] = dict(
            await rows(dbs["notify"], "SELECT status, count(*) FROM notification GROUP BY status")
        )
        with contextlib.suppress(httpx.HTTPError, KeyError, ValueError):
            state["kpi orders"] = (
                await c.get(urls["metrics"] + "/v1/kpis", headers=API_KEY)
            ).json()["total"]["orders"]
        # no event is stuck: every event any service produced was applied by each consumer
        state["unconsumed"] = await unconsumed(dbs)
        # no waiting line is lost: each ends routed or visibly failed
        state["waiting lines"] = (
            await rows(dbs["order"], "SELECT count(*) FROM order_line WHERE waiting IS NOT NULL")
        )[0][0]
        # every shipment of a marketplace order has been told to its shop (or given up on)
        state["write-backs pending"] = (
            await rows(
                dbs["order"], "SELECT count(*) FROM marketplace_writeback WHERE status = 'pending'"
            )
        )[0][0]
        return (
            not state["unconsumed"]
            and not any(state["outbox backlog"])
            and len(orders) == expected
            and not any(s in ("placed", "routed") for (s,) in orders)
            and not set(state["supplier orders"]) & {"to_send", "sending", "received"}
            and not set(state["notifications"]) & {"pending", "sending"}
            and state.get("kpi orders") == expected - len(storm.held)
            and not state["waiting lines"]
            and not state["write-backs pending"]
        )

    try:
        # waiting lines retry with backoff up to a minute, so settling may take a few rounds
        await eventually(quiet, timeout=300, interval=0.5, what="the system to settle")
    except AssertionError as exc:
        # what the lines still waiting were doing, to tell a stuck line from a slow one
        state["waiting rows"] = await rows(
            dbs["supplier"],
            "SELECT order_id, line_id, reason, retry_at, attempts FROM waiting_line",
        )
        state["their supplier orders"] = await rows(
            dbs["supplier"],
            "SELECT so.order_id, so.supplier_id, so.state, so.failure, so.created_at"
            " FROM supplier_order so JOIN waiting_line w ON w.order_id = so.order_id",
        )
        state["stock"] = await rows(dbs["supplier"], "SELECT supplier_id, sku, stock FROM offer")
        state["notifications not sent"] = await rows(
            dbs["notify"],
            "SELECT kind, channel, status, attempts, last_error, next_attempt_at, lease_until"
            " FROM notification WHERE status NOT IN ('sent', 'suppressed') LIMIT 20",
        )
        lines = log.read_text(errors="replace").splitlines()  # noqa: ASYNC240 - after the run
        state["last errors logged"] = [ln[:300] for ln in lines if "ERROR" in ln][-15:]
        raise AssertionError(f"did not settle: {state}") from exc


async def check(dbs: dict[str, str], storm: Storm, mailbox: Any, kpis: dict[str, Any]) -> None:
    # every accepted order exists exactly once (webhook duplicates created nothing)
    orders = await rows(dbs["order"], "SELECT id, channel, external_id FROM customer_order")
    storefront = {o.external_id for o in orders if o.channel == "storefront"}
    marketplace = Counter(o.external_id for o in orders if o.channel == "shopify")
    woo = Counter(o.external_id for o in orders if o.channel == "woocommerce")
    assert storefront == set(storm.accepted)
    assert set(marketplace) == {str(i) for i in storm.shopify} and set(marketplace.values()) == {1}
    assert set(woo) == {str(i) for i in storm.woocommerce} and set(woo.values()) <= {1}

    # every line of every order went to exactly one live supplier order; nothing bought twice
    live = await rows(
        dbs["supplier"],
        "SELECT a.order_id, a.line_id, so.id AS so_id, so.supplier_id, a.quantity, a.unit_cost, "
        "a.unit_price FROM allocation a JOIN supplier_order so ON so.id = a.supplier_order_id "
        "WHERE so.state IN ('accepted', 'dispatched', 'delivered')",
    )
    per_line = Counter((r.order_id, r.line_id) for r in live)
    assert set(per_line.values()) <= {1}, "a line was bought twice"
    lines = await rows(
        dbs["order"],
        "SELECT l.order_id, l.id, o.status FROM order_line l "
        "JOIN customer_order o ON o.id = l.order_id",
    )
    unrouted = [(r.order_id, r.id) for r in lines if (r.order_id, r.id) not in per_line]
    statuses = {r.order_id: r.status for r in lines}
    # a held order is never routed: it stays on hold with no supplier order at all
    held_ids = {o.id for o in orders if o.external_id in storm.held}
    assert storm.held, "the storm placed orders with impossible addresses"
    assert all(statuses[order_id] == "on_hold" for order_id in held_ids)
    sent_to_supplier = {
        r.order_id
        for r in await rows(
            dbs["supplier"],
            "SELECT DISTINCT a.order_id FROM allocation a "
            "JOIN supplier_order so ON so.id = a.supplier_order_id",
        )
    }
    assert not held_ids & sent_to_supplier, "a held order was routed"
    assert not storm.bad_ship_to, f"supplier orders without a complete ship-to: {storm.bad_ship_to}"
    # a line without a supplier order is one routing gave up on, visibly (needs_attention)
    assert all(
        statuses[order_id] == "needs_attention"
        for order_id, _ in unrouted
        if order_id not in held_ids
    )
    # routing fails visibly while every supplier's breaker is open after a simulator kill;
    # the storm must still have routed most lines for the check to mean anything
    assert len(per_line) >= len(lines) / 3, f"too few lines routed: {len(per_line)}/{len(lines)}"
    seen = set().union(*storm.sim_seen.values())
    assert {r.so_id for r in live} <= seen  # the simulator really has every live order
    every = {r.so_id for r in await rows(dbs["supplier"], "SELECT id AS so_id FROM supplier_order")}
    assert seen <= every  # and none we do not know of

    # every delay notice was e-mailed exactly once (a copy after a crash keeps its Message-ID)
    sent = await rows(
        dbs["notify"],
        "SELECT id, order_id, reason FROM notification WHERE kind = 'shipment_delayed' "
        "AND channel = 'email' AND status = 'sent'",
    )
    assert sent, "the never-shipping supplier caused delay notices"
    copies = Counter(m["Message-ID"].strip("<>").split("@")[0] for m in mailbox.messages)
    assert all(copies[row.id] >= 1 for row in sent)
    # one message per notice: a second copy exists only with the same Message-ID, after a
    # crash between SMTP's acceptance and our commit
    resent = sum(n - 1 for n in copies.values())
    unsent = await rows(dbs["notify"], "SELECT count(*) FROM notification WHERE status = 'dead'")
    assert unsent[0][0] == 0

    # the KPIs equal the truth recomputed from the sources
    gmv = (
        sum(v for k, v in storm.accepted.items() if k not in storm.held)
        + sum(storm.shopify.values())
        + sum(storm.woocommerce.values())
    )
    margin = sum((r.unit_price - r.unit_cost) * r.quantity for r in live)
    total = kpis["total"]
    assert total["orders"] == len(orders) - len(storm.held)  # held orders are never placed
    assert Decimal(total["gmv"]["USD"]) == gmv
    assert Decimal(total["gross_margin"]["USD"]) == margin.quantize(Decimal("0.01"))
    print(
        f"chaos seed {SEED}: {len(orders)} orders ({len(unrouted)} lines failed routing), "
        f"{len(sent)} delay notices, "
        f"{resent} same-Message-ID resends, errors while services were down: {dict(storm.errors)}"
    )
