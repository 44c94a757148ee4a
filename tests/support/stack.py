"""`make up`'s launcher driven from a test: free ports, its own data folder, start and stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from shared.infra import free_port
from tests.support.data import API_KEY, order_body

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("order", "supplier", "notify", "metrics", "console", "simulator", "marketplace_sim")
STATUSES = ("placed", "routed", "confirmed", "shipped", "delivered", "needs_attention", "cancelled")


class LocalStack:
    """One `python -m deploy.local up` over `data`; `start()` again after a stop reuses it."""

    def __init__(self, data: Path, extra_env: dict[str, str] | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
        env["DROPSHIP_DATA_DIR"] = str(data)
        env["DROPSHIP_EMBEDDED_KAFKA_PORT"] = str(free_port())
        for name in SERVICES:
            env[f"DROPSHIP_{name.upper()}_PORT"] = str(free_port())
        env.update(extra_env or {})
        self.env = env
        self.data = data
        self.log = data.parent / "up.log"
        self.urls = {n: f"http://127.0.0.1:{env[f'DROPSHIP_{n.upper()}_PORT']}" for n in SERVICES}
        self.launcher: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 120) -> LocalStack:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            self.launcher = subprocess.Popen(
                [sys.executable, "-m", "deploy.local", "up"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        for name in ("order", "supplier", "notify", "metrics", "simulator"):
            self._wait_ready(name, deadline)
        while "Dropship is up" not in self.log.read_bytes()[offset:].decode(errors="replace"):
            if time.monotonic() > deadline or self.launcher.poll() is not None:
                raise AssertionError("the stack did not come up:\n" + self.tail())
            time.sleep(0.2)  # the demo data is seeded too
        return self

    def stop(self, sig: int = signal.SIGINT, timeout: float = 60) -> int:
        assert self.launcher is not None
        self.launcher.send_signal(sig)
        return self.launcher.wait(timeout)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def _wait_ready(self, name: str, deadline: float) -> None:
        probe = "/healthz" if name in ("simulator", "marketplace_sim") else "/readyz"
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.urls[name] + probe, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{name} not ready:\n{self.tail()}")

    # -- a simulated supplier of its own, and orders for it ------------------------------
    def add_supplier(self, key: str, sku: str, stock: int, **control: Any) -> str:
        """A supplier at the simulator that alone offers `sku`; its simulator `control` set."""
        body = {
            "name": f"Burst {key}",
            "supplier_key": key,
            "api_base_url": f"{self.urls['simulator']}/{key}",
            "credentials": {"api_key": f"sim-key-{key}", "webhook_secret": f"sim-secret-{key}"},
            "priority": 1,
            "ship_sla_hours": 48.0,
        }
        with httpx.Client(base_url=self.urls["supplier"], headers=API_KEY, timeout=10) as client:
            supplier_id = str(
                client.post("/v1/suppliers", json=body).raise_for_status().json()["id"]
            )
            offer = {
                "sku": sku,
                "supplier_sku": f"S-{sku}",
                "unit_cost": "3.00",
                "currency": "USD",
                "stock": stock,
                "lead_time_hours": 24,
            }
            client.put(f"/v1/suppliers/{supplier_id}/offers", json=[offer]).raise_for_status()
        httpx.put(f"{self.urls['simulator']}/_control/{key}", json=control).raise_for_status()
        return supplier_id

    async def place(self, count: int, sku: str) -> list[str]:
        """`count` orders sent at once; the ids of those the order service accepted (what
        became of the others is in `self.refused`; how many 503s were retried in `shed`)."""
        self.refused: Counter[str] = Counter()
        self.shed = 0
        limits = httpx.Limits(max_connections=count)
        async with httpx.AsyncClient(
            base_url=self.urls["order"], headers=API_KEY, timeout=60, limits=limits
        ) as client:

            async def one(i: int) -> str | None:
                failures = 0
                while True:  # as the API asks: a 503 is sent again after its Retry-After,
                    try:  # and an unanswered request again with the same Idempotency-Key
                        response = await client.post(
                            "/v1/orders",
                            json=order_body(sku=sku, quantity=1),
                            headers={"Idempotency-Key": f"burst-{sku}-{i}"},
                        )
                    except httpx.TransportError as exc:
                        failures += 1
                        if failures == 5:
                            self.refused[type(exc).__name__] += 1
                            return None
                        await asyncio.sleep(1)
                        continue
                    if response.status_code != 503:
                        break
                    self.shed += 1
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                if response.status_code != 201:
                    self.refused[f"{response.status_code} {response.text[:120]}"] += 1
                    return None
                return str(response.json()["id"])

            placed = await asyncio.gather(*(one(i) for i in range(count)))
        return [p for p in placed if p is not None]

    def statuses(self, ids: set[str]) -> Counter[str]:
        """How many of the orders `ids` are in each status."""
        found: Counter[str] = Counter()
        with httpx.Client(base_url=self.urls["order"], headers=API_KEY, timeout=30) as client:
            for status in STATUSES:
                cursor: str | None = None
                while True:
                    params: dict[str, Any] = {"status": status, "limit": 200}
                    if cursor:
                        params["cursor"] = cursor
                    page = _get(client, "/v1/orders", params)
                    found[status] += sum(1 for o in page["items"] if o["id"] in ids)
                    cursor = page["next_cursor"]
                    if not cursor:
                        break
        return found

    def simulator_stats(self, key: str) -> dict[str, Any]:
        response = httpx.get(f"{self.urls['simulator']}/_control/{key}/stats", timeout=30)
        stats: dict[str, Any] = response.raise_for_status().json()
        return stats


def _get(client: httpx.Client, path: str, params: dict[str, Any]) -> Any:
    """GET, waiting out a busy service's 503s and dropped connections."""
    for _ in range(30):
        try:
            response = client.get(path, params=params)
        except httpx.TransportError:
            time.sleep(1)
            continue
        if response.status_code != 503:
            return response.raise_for_status().json()
        time.sleep(float(response.headers.get("Retry-After", "1")))
    raise AssertionError(f"{path} stayed busy")


def wait_all(
    stack: LocalStack, ids: set[str], status: str, timeout: float
) -> tuple[Counter[str], float]:
    """Wait until every order in `ids` is in `status` (`delivered`: first by the metrics
    service's cheap event counts, so polling does not load the order service); the counts
    and the seconds taken."""
    started = time.monotonic()
    counts: Counter[str] = Counter()
    with httpx.Client(base_url=stack.urls["metrics"], headers=API_KEY, timeout=30) as metrics:
        while status == "delivered" and time.monotonic() - started < timeout:
            seen = _get(metrics, "/v1/events/counts", {})
            if seen.get("shipment-delivered", 0) >= len(ids):
                break
            time.sleep(2)
    while time.monotonic() - started < timeout:
        counts = stack.statuses(ids)
        if counts[status] == len(ids):
            break
        time.sleep(3)
    return counts, time.monotonic() - started
