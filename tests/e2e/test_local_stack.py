"""`make up`'s launcher as a user runs it: separate processes, real HTTP, embedded broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from deploy.local import EMBEDDED_PARTITIONS
from shared.infra import free_port
from tests.support.data import API_KEY, order_body
from tests.support.kafka import partition_count

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("order", "supplier", "notify", "metrics", "simulator", "console")


def _wait_ready(url: str, deadline: float, probe: str = "/readyz") -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + probe, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready")


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "deploy.local", "up"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def stack_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    env["DROPSHIP_DATA_DIR"] = str(tmp_path / "var")
    env["DROPSHIP_EMBEDDED_KAFKA_PORT"] = str(free_port())
    env["DROPSHIP_MARKETPLACE_SIM_PORT"] = str(free_port())
    for name in SERVICES:
        env[f"DROPSHIP_{name.upper()}_PORT"] = str(free_port())
    return env


def test_local_stack_runs_an_order_through_and_stops_cleanly_twice(stack_env, tmp_path):
    urls = {n: f"http://127.0.0.1:{stack_env[f'DROPSHIP_{n.upper()}_PORT']}" for n in SERVICES}
    log = tmp_path / "up.log"
    for run in (1, 2):  # a second `make up` over the same data folder works too
        launcher = _start(stack_env, log)
        try:
            deadline = time.monotonic() + 90
            for name, url in urls.items():
                _wait_ready(url, deadline, "/healthz" if name == "simulator" else "/readyz")
            placed = httpx.post(
                urls["order"] + "/v1/orders",
                json=order_body(sku="MUG-1"),
                headers=API_KEY,
                timeout=10,
            )
            assert placed.status_code == 201, placed.text
            while time.monotonic() < deadline:
                counts = httpx.get(
                    urls["metrics"] + "/v1/events/counts", headers=API_KEY, timeout=5
                ).json()
                if counts.get("order-placed", 0) >= run:
                    break
                time.sleep(0.2)
            assert counts.get("order-placed") == run, f"run {run}: metrics saw {counts}"
            order_url = f"{urls['order']}/v1/orders/{placed.json()['id']}"
            status = None
            while time.monotonic() < deadline:  # routed to a demo supplier at the simulator
                status = httpx.get(order_url, headers=API_KEY, timeout=5).json()["status"]
                if status in ("confirmed", "shipped", "delivered"):
                    break
                time.sleep(0.2)
            assert status in ("confirmed", "shipped", "delivered"), f"run {run}: order is {status}"
            # the demo supplier ships after a second; with no SMTP configured the customer's
            # dispatch notice is written as an .eml file in the data folder
            order_id = placed.json()["id"]
            mails: list[Path] = []
            while time.monotonic() < deadline:
                mails = [
                    p
                    for p in (tmp_path / "var" / "mail").glob("*.eml")
                    if order_id in p.read_text(errors="replace")
                ]
                if mails:
                    break
                time.sleep(0.2)
            assert len(mails) == 1, f"run {run}: no dispatch notice for {order_id}"
            notices = httpx.get(
                urls["notify"] + "/v1/notifications",
                params={"order_id": order_id},
                headers=API_KEY,
                timeout=5,
            ).json()["items"]
            assert [(n["kind"], n["status"]) for n in notices] == [("shipment_dispatched", "sent")]
            # the embedded broker's topics have the embedded default's partitions (one
            # process per service: more would cost the broker and serve no one)
            bootstrap = f"127.0.0.1:{stack_env['DROPSHIP_EMBEDDED_KAFKA_PORT']}"
            partitions = asyncio.run(partition_count(bootstrap, "order-placed"))
            assert partitions == EMBEDDED_PARTITIONS == 4
        finally:
            launcher.send_signal(signal.SIGINT)
            assert launcher.wait(60) == 0, log.read_text()[-3000:]
        for url in urls.values():
            with pytest.raises(httpx.ConnectError):
                httpx.get(url + "/healthz", timeout=2)
    secrets = json.loads((tmp_path / "var" / "dev-secrets.json").read_text())
    assert set(secrets) >= {"DROPSHIP_PII_KEY", "DROPSHIP_SHOPIFY_SECRET"}
    assert "Dropship is up" in log.read_text()
    for name in SERVICES[:4]:
        assert (tmp_path / "var" / f"{name}.db").exists()
