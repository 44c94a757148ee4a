"""The ops console in a real headless Chromium against the stack `make up` runs.

An operator signs in with TOTP, acknowledges an alert, cancels an order and uploads a CSV
with one bad row; a viewer is refused an action; the audit log shows every step; axe-core
finds no serious or critical accessibility problem on the main pages. Set
`DROPSHIP_CONSOLE_SCREENSHOTS=<folder>` to keep screenshots of the main pages.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from playwright.async_api import Browser, Page, async_playwright

from shared.infra import free_port
from shared.testing import eventually
from tests.support.data import API_KEY, order_body

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
AXE = ROOT / "tests" / "support" / "vendor" / "axe.min.js"
SERVICES = ("order", "supplier", "notify", "metrics", "console", "simulator")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing: make sysdeps"),
]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`python -m deploy.local up` on free ports; yields the URLs, the env and the launcher log."""
    with launched(tmp_path) as up:
        yield up


@contextmanager
def launched(tmp_path: Path, extra: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
    """`python -m deploy.local up` on free ports with `extra` settings (say, PostgreSQL
    database URLs); stopped with Ctrl-C on exit, which must end it cleanly."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DROPSHIP_")}
    env.update(extra or {})
    env["DROPSHIP_DATA_DIR"] = str(tmp_path / "var")
    env["DROPSHIP_EMBEDDED_KAFKA_PORT"] = str(free_port())
    env["DROPSHIP_MARKETPLACE_SIM_PORT"] = str(free_port())
    for name in SERVICES:
        env[f"DROPSHIP_{name.upper()}_PORT"] = str(free_port())
    urls = {n: f"http://127.0.0.1:{env[f'DROPSHIP_{n.upper()}_PORT']}" for n in SERVICES}
    log = tmp_path / "up.log"
    with log.open("ab") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "deploy.local", "up"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield {"urls": urls, "env": env, "log": log}
    finally:
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(60) == 0, log.read_text()[-3000:]


def _create_user(env: dict[str, str], email: str, role: str) -> dict[str, Any]:
    """Through the documented command, as an admin would."""
    done = subprocess.run(
        [sys.executable, "-m", "services.console.users", "create", "--email", email,
         "--role", role, "--with-totp"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    created: dict[str, Any] = json.loads(done.stdout)
    return created


async def _sign_in(page: Page, base: str, creds: dict[str, Any]) -> None:
    await page.goto(base + "/login")
    await page.get_by_label("E-mail").fill(creds["email"])
    await page.get_by_label("Password").fill(creds["password"])
    await page.get_by_role("button", name="Continue").click()
    await page.wait_for_url("**/login/totp")
    await page.get_by_label("Authentication code").fill(pyotp.TOTP(creds["totp_secret"]).now())
    await page.keyboard.press("Enter")  # keyboard use: the form submits without a mouse
    await page.wait_for_url(base + "/")


async def _axe(page: Page) -> list[str]:
    """Serious and critical axe-core violations of the page as it is now."""
    await page.add_script_tag(path=str(AXE))
    result = await page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
        ".filter(v => ['serious', 'critical'].includes(v.impact))"
        ".map(v => v.id + ': ' + v.nodes.map(n => n.target.join(' ')).join(', '))"
    )
    return list(result)


async def _wait_ready(urls: dict[str, str]) -> None:
    async with httpx.AsyncClient(timeout=2) as client:
        for name, url in urls.items():
            probe = "/healthz" if name == "simulator" else "/readyz"

            async def ready(url: str = url, probe: str = probe) -> bool:
                try:
                    return (await client.get(url + probe)).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready, timeout=90, interval=0.2, what=f"{name} ready")


async def _needs_attention(order_url: str, sku: str) -> str:
    async with httpx.AsyncClient(base_url=order_url, headers=API_KEY, timeout=10) as client:
        placed = await client.post("/v1/orders", json=order_body(sku=sku))
        assert placed.status_code == 201, placed.text
        order_id: str = placed.json()["id"]

        async def stuck() -> bool:
            status = (await client.get(f"/v1/orders/{order_id}")).json()["status"]
            return bool(status == "needs_attention")

        await eventually(stuck, timeout=60, what=f"{order_id} needs attention")
    return order_id


async def test_operator_and_viewer_work_the_console_in_a_browser(stack):
    urls, env = stack["urls"], stack["env"]
    base = urls["console"]
    await _wait_ready(urls)

    async def printed_admin() -> str:
        text = stack["log"].read_text()
        return text if "Dropship is up" in text else ""

    printed = await eventually(printed_admin, timeout=60, what="`make up` banner")
    assert "console development admin" in printed
    assert re.search(r"TOTP secret [A-Z2-7]{32}", printed)
    operator = _create_user(env, "olivia@example.com", "operator")
    viewer = _create_user(env, "victor@example.com", "viewer")
    alerted = await _needs_attention(urls["order"], "NO-SUCH-SKU-1")
    to_cancel = await _needs_attention(urls["order"], "NO-SUCH-SKU-2")
    async with httpx.AsyncClient(base_url=urls["notify"], headers=API_KEY) as notify:

        async def alert_for_order() -> str | None:
            items = (await notify.get("/v1/alerts", params={"open": "true"})).json()["items"]
            return next((a["id"] for a in items if a["order_id"] == alerted), None)

        alert_id = await eventually(alert_for_order, timeout=60, what="routing alert")
    shots = os.environ.get("DROPSHIP_CONSOLE_SCREENSHOTS")
    async with async_playwright() as pw:
        browser: Browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await (
                await browser.new_context(viewport={"width": 1280, "height": 900})
            ).new_page()
            script_errors: list[str] = []
            page.on("pageerror", lambda exc: script_errors.append(str(exc)))
            await _sign_in(page, base, operator)
            assert await page.locator(f'tr[data-alert="{alert_id}"]').count() == 1
            assert await page.locator(f'tr[data-order="{to_cancel}"]').count() == 1
            if shots:
                await page.screenshot(path=f"{shots}/console-inbox.png", full_page=True)
            row = page.locator(f'tr[data-alert="{alert_id}"]')
            await row.get_by_role("button", name="Acknowledge").click()
            await page.wait_for_selector(".flash.ok")
            assert await page.locator(f'tr[data-alert="{alert_id}"]').count() == 0
            row = page.locator(f'tr[data-order="{to_cancel}"]')
            await row.get_by_role("button", name="Cancel order").click()
            await page.wait_for_selector(f".flash.ok >> text={to_cancel}")
            async with httpx.AsyncClient(headers=API_KEY) as client:
                alert = (await client.get(f"{urls['notify']}/v1/alerts/{alert_id}")).json()
                assert alert["acked_by"] == operator["email"]
                order = (await client.get(f"{urls['order']}/v1/orders/{to_cancel}")).json()
                assert order["status"] == "cancelled"
                listed = await client.get(f"{urls['supplier']}/v1/suppliers")
                supplier = listed.json()["items"][0]["id"]
            # a CSV with one bad row: nothing imported, the row shown by line and column
            await page.goto(base + "/suppliers")
            csv = (
                "sku,supplier_id,supplier_sku,unit_cost,currency,stock,lead_time_hours\n"
                f"ZZ-1,{supplier},ZZ-1,1.00,USD,5,24\n"
                f"ZZ-2,{supplier},ZZ-2,cheap,USD,5,24\n"
            )
            await page.get_by_label("CSV", exact=True).set_input_files(
                files=[{"name": "offers.csv", "mimeType": "text/csv", "buffer": csv.encode()}]
            )
            await page.get_by_role("button", name="Upload").click()
            errors = page.locator("#csv-errors")
            await errors.wait_for()
            shown = await errors.inner_text()
            assert re.search(r"\n3\s+unit_cost\s", shown) and "\n2\t" not in shown, shown
            problems: dict[str, list[str]] = {}
            for path in ("/", "/orders", f"/orders/{alerted}", "/suppliers", "/alerts", "/kpis",
                         "/audit"):  # fmt: skip
                await page.goto(base + path)
                if found := await _axe(page):
                    problems[path] = found
                if shots and path.startswith("/orders/"):
                    await page.screenshot(path=f"{shots}/console-order.png", full_page=True)
                if shots and path in ("/kpis", "/suppliers"):
                    name = path.strip("/")
                    await page.screenshot(path=f"{shots}/console-{name}.png", full_page=True)
            assert not problems, problems
            assert not script_errors, script_errors
            # the viewer sees no action buttons, and the server refuses the action anyway
            viewer_page = await (await browser.new_context()).new_page()
            await _sign_in(viewer_page, base, viewer)
            await viewer_page.goto(base + f"/orders/{alerted}")
            assert await viewer_page.get_by_role("button", name="Cancel order").count() == 0
            token = await viewer_page.locator('input[name="csrf"]').first.get_attribute("value")
            refused = await viewer_page.request.post(
                base + f"/orders/{alerted}/cancel", form={"csrf": token or ""}
            )
            assert refused.status == 403
            await page.goto(base + "/audit")
            if shots:
                await page.screenshot(path=f"{shots}/console-audit.png", full_page=True)
            log = await page.locator("#audit-table").inner_text()
            for words in (
                f"{operator['email']}",
                "sign-in",
                f"acknowledge alert\t{alert_id}\tok",
                f"cancel order\t{to_cancel}\tok",
                "import offers\toffers.csv\terror",
                f"refused\t/orders/{alerted}/cancel\trefused",
            ):
                assert words in log, (words, log)
        finally:
            await browser.close()
