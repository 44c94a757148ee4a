"""Two inbox rows worked from the inbox in a real headless Chromium, on the stack `make up`
runs: an order held for an impossible postcode is fixed from its "Fix address" link and is
seen to route; a line waiting for a supplier that keeps failing is re-routed from its row
and another supplier takes it. The audit log shows both; axe-core finds no serious or
critical problem on the inbox with those rows. An admin adds a console user on the users
page."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, async_playwright

from shared.testing import eventually
from tests.e2e.test_console_browser import (
    ARGS,
    CHROMIUM,
    _axe,
    _create_user,
    _sign_in,
    _wait_ready,
    launched,
)
from tests.support.data import API_KEY, order_body

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing: make sysdeps"),
]
ROUTED = ("routed", "confirmed", "shipped", "delivered")


@pytest.fixture
def slow_retry_stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The stack, with waiting lines retried only after ten minutes: within this test only
    the operator's click routes a waiting line again."""
    extra = {
        "DROPSHIP_SUPPLIER_RETRY_WAITING_S": "600",
        "DROPSHIP_SUPPLIER_RETRY_WAITING_MAX_S": "600",
    }
    with launched(tmp_path, extra) as up:
        yield up


async def test_operator_fixes_a_held_address_and_reroutes_a_waiting_line_from_the_inbox(
    slow_retry_stack: dict[str, Any],
) -> None:
    urls, env = slow_retry_stack["urls"], slow_retry_stack["env"]
    base = urls["console"]
    await _wait_ready(urls)
    operator = _create_user(env, "iris@example.com", "operator")
    wait_sku = f"WAIT-{uuid.uuid4().hex[:6].upper()}"
    async with httpx.AsyncClient(headers=API_KEY, timeout=10) as api:
        suppliers = (await api.get(f"{urls['supplier']}/v1/suppliers")).json()["items"]
        by_key = {s["supplier_key"]: s["id"] for s in suppliers}
        # only Coral offers the SKU, and Coral's API answers every call with a 500
        offer = {"sku": wait_sku, "supplier_sku": f"CORA-{wait_sku}", "unit_cost": "2.00",
                 "currency": "USD", "stock": 50, "lead_time_hours": 24}  # fmt: skip
        put = await api.put(
            f"{urls['supplier']}/v1/suppliers/{by_key['coral-trade']}/offers", json=[offer]
        )
        assert put.status_code == 200, put.text
        failing = await api.put(
            f"{urls['simulator']}/_control/coral-trade", json={"fail_http_rate": 1.0}
        )
        assert failing.status_code == 200, failing.text
        waiting = await api.post(f"{urls['order']}/v1/orders", json=order_body(wait_sku, 1))
        assert waiting.status_code == 201, waiting.text
        waiting_id, waiting_line = waiting.json()["id"], waiting.json()["lines"][0]["line_id"]
        held_body = order_body("MUG-1", 1)
        held_body["shipping_address"]["postal_code"] = "ABCDE"  # not a US ZIP code
        held = await api.post(f"{urls['order']}/v1/orders", json=held_body)
        assert held.status_code == 201, held.text
        assert held.json()["status"] == "on_hold", held.text
        held_id = held.json()["id"]

        async def line_waits() -> bool:
            got = (await api.get(f"{urls['order']}/v1/orders/{waiting_id}")).json()
            return bool(got["lines"][0]["state"] == "waiting_supplier")

        await eventually(line_waits, timeout=90, interval=0.5, what="line waiting for Coral")

    async with async_playwright() as pw:
        browser: Browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await (
                await browser.new_context(viewport={"width": 1280, "height": 900})
            ).new_page()
            script_errors: list[str] = []
            page.on("pageerror", lambda exc: script_errors.append(str(exc)))
            await _sign_in(page, base, operator)
            assert await page.locator("#inbox .flash.error").count() == 0, "every read answered"
            held_row = page.locator(f'#held-table tr[data-order="{held_id}"]')
            assert "postal_code" in await held_row.inner_text()
            wait_row = page.locator(f'#waiting-table tr[data-line="{waiting_line}"]')
            assert await wait_row.count() == 1
            problems = await _axe(page)

            # the held order: its row's link opens the address form, already open
            await held_row.get_by_role("link", name="Fix the address").click()
            await page.wait_for_url(f"**/orders/{held_id}#fix-address")
            assert await page.locator("#fix-address").get_attribute("open") is not None
            assert await page.locator("#addr-postal_code").input_value() == "ABCDE"
            await page.locator("#addr-line1").fill("1 Main St")  # never shown: PII stays sealed
            await page.locator("#addr-postal_code").fill("10001")
            await page.locator("#fix-address").get_by_role("button", name="Save").click()
            flash = page.locator(".flash", has_text="fix address").last
            await flash.wait_for()
            assert "ok" in (await flash.get_attribute("class") or ""), await flash.inner_text()

            async def routed() -> bool:
                await page.goto(f"{base}/orders/{held_id}")
                status = await page.locator("#order-status").inner_text()
                allocated = await page.locator("#allocations-table tbody tr").count()
                return status in ROUTED and allocated > 0

            await eventually(routed, timeout=60, interval=1, what="the fixed order routes")

            # the waiting line: Acme now offers the SKU; the row's button routes it again
            async with httpx.AsyncClient(headers=API_KEY, timeout=10) as api:
                acme = {**offer, "supplier_sku": f"ACME-{wait_sku}", "unit_cost": "2.10"}
                put = await api.put(
                    f"{urls['supplier']}/v1/suppliers/{by_key['acme-goods']}/offers", json=[acme]
                )
                assert put.status_code == 200, put.text
            await page.goto(base + "/")
            wait_row = page.locator(f'#waiting-table tr[data-line="{waiting_line}"]')
            await wait_row.get_by_role("button", name="Re-route line").click()
            await page.locator(".flash.ok", has_text="re-route line").wait_for()
            async with httpx.AsyncClient(headers=API_KEY, timeout=10) as api:

                async def acme_has_it() -> bool:
                    got = await api.get(
                        f"{urls['supplier']}/v1/allocations", params={"order_id": waiting_id}
                    )
                    return any(
                        a["supplier_id"] == by_key["acme-goods"] for a in got.json()["items"]
                    )

                await eventually(acme_has_it, timeout=60, what="Acme takes the waiting line")

            async def off_the_inbox() -> bool:
                await page.goto(base + "/")
                rows = page.locator(f'#waiting-table tr[data-line="{waiting_line}"]')
                return await rows.count() == 0

            await eventually(off_the_inbox, timeout=60, interval=1, what="the line leaves")
            await page.goto(base + "/audit")
            log = await page.locator("#audit-table").inner_text()
            for words in (
                f"fix address\t{held_id}\tok",
                f"re-route line\t{waiting_id}/{waiting_line}\tok",
            ):
                assert words in log, (words, log)
            # an admin adds a console user on the users page (operators have no such page)
            assert await page.locator('nav a[href="/users"]').count() == 0
            admin_page = await (await browser.new_context()).new_page()
            await _sign_in(admin_page, base, _create_user(env, "ada@example.com", "admin"))
            await admin_page.get_by_role("link", name="Users").click()
            await admin_page.locator("#add-user summary").click()
            await admin_page.locator("#new-user-email").fill("nia@example.com")
            await admin_page.locator("#new-user-role").select_option("viewer")
            await admin_page.get_by_role("button", name="Add a user").click()
            created = await admin_page.locator("#user-created").inner_text()
            assert "nia@example.com" in created
            row = admin_page.locator('#users-table tr[data-user="nia@example.com"]')
            assert "viewer" in await row.inner_text()
            await admin_page.locator("#add-user").evaluate("d => d.open = true")
            problems += await _axe(admin_page)
            assert not problems, problems
            assert not script_errors, script_errors
        finally:
            await browser.close()
