"""After-sales in the console, in a real headless Chromium, on the stack `make up` runs with
every service on PostgreSQL: an operator finds a delivered order, opens a return, authorises
it (the simulated supplier's RMA shows on the page), marks it received and refunds it (the
amount shown to the cent), then files, answers and resolves a complaint. A refund beyond what
was paid and a blank required field are refused naming the field, and change nothing. The
audit log shows each step; axe-core finds no serious or critical problem on those pages."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright

from deploy.local import MIGRATED
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


@pytest.fixture
async def pg_stack(
    tmp_path: Path, database_url: Callable[[str], Any]
) -> AsyncIterator[dict[str, Any]]:
    """The `make up` stack with each service's database on the test PostgreSQL cluster."""
    dbs = {f"DROPSHIP_{n.upper()}_DATABASE_URL": await database_url(n) for n in MIGRATED}
    with launched(tmp_path, dbs) as up:
        yield up


async def _delivered_order(urls: dict[str, str]) -> tuple[str, str, str]:
    """A two-mug order the simulated supplier delivers: (order id, line id, supplier key)."""
    async with httpx.AsyncClient(headers=API_KEY, timeout=10) as api:
        placed = await api.post(f"{urls['order']}/v1/orders", json=order_body("MUG-1", 2, "12.50"))
        assert placed.status_code == 201, placed.text
        order_id, line_id = placed.json()["id"], placed.json()["lines"][0]["line_id"]

        async def delivered() -> bool:
            got = (await api.get(f"{urls['order']}/v1/orders/{order_id}")).json()
            return bool(got["status"] == "delivered")

        await eventually(delivered, timeout=120, interval=0.5, what=f"{order_id} delivered")
        allocations = await api.get(
            f"{urls['supplier']}/v1/allocations", params={"order_id": order_id}
        )
        supplier_id = allocations.json()["items"][0]["supplier_id"]
        suppliers = (await api.get(f"{urls['supplier']}/v1/suppliers")).json()["items"]
        key = next(s["supplier_key"] for s in suppliers if s["id"] == supplier_id)
    return order_id, line_id, key


async def _read(urls: dict[str, str], service: str, path: str, **params: str) -> Any:
    async with httpx.AsyncClient(headers=API_KEY, timeout=10) as api:
        got = await api.get(urls[service] + path, params=params)
        assert got.status_code == 200, got.text
        return got.json()


async def _open_forms(page: Page) -> None:
    for details in await page.locator("details").all():
        await details.evaluate("d => d.open = true")


@pytest.mark.parametrize("backend", ["postgresql"])
async def test_operator_works_a_return_a_refund_and_a_complaint_in_a_browser(
    pg_stack: dict[str, Any],
) -> None:
    urls, env = pg_stack["urls"], pg_stack["env"]
    base = urls["console"]
    await _wait_ready(urls)
    operator = _create_user(env, "rhea@example.com", "operator")
    order_id, line_id, supplier_key = await _delivered_order(urls)
    problems: dict[str, list[str]] = {}

    async with async_playwright() as pw:
        browser: Browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            script_errors: list[str] = []
            page.on("pageerror", lambda exc: script_errors.append(str(exc)))
            await _sign_in(page, base, operator)
            # every read the inbox makes exists: no problem shown
            assert await page.locator("#inbox .flash.error").count() == 0

            # find the delivered order, open it
            await page.goto(base + "/orders")
            await page.locator("#status").select_option("delivered")
            await page.get_by_role("button", name="Search", exact=True).click()
            await page.wait_for_url("**/orders?*status=delivered*")
            await page.locator(f'#orders-table a[href="/orders/{order_id}"]').click()
            await page.wait_for_url(f"**/orders/{order_id}")
            assert await page.locator(".flash.error").count() == 0, "every read answered"

            # open a return of one of the two mugs
            await page.locator("#new-return summary").click()
            await page.locator("#return-reason").select_option("damaged_in_transit")
            await page.locator(f"#return-qty-{line_id}").fill("1")
            await page.locator("#return-note").fill("box crushed")
            await page.get_by_role("button", name="Open a return").click()
            await _shown(page, "ok", "open return")
            row = page.locator("#order-returns-table tr[data-return]")
            return_id = await row.get_attribute("data-return")
            assert return_id and "requested" in await row.inner_text()

            # authorise it on the returns page: the supplier's RMA is shown
            await page.goto(base + "/returns")
            await _axe_into(page, problems, "/returns")
            row = page.locator(f'#returns-list tr[data-return="{return_id}"]')
            await row.get_by_role("button", name="Authorize").click()
            await _shown(page, "ok", f"authorize return {return_id}")
            granted = await _read(urls, "simulator", f"/_control/{supplier_key}/returns")
            [rma] = [r["rma"] for r in granted["items"]]
            assert rma and rma.startswith("RMA-")
            await page.goto(base + "/returns?status=authorized")
            row = page.locator(f'#returns-list tr[data-return="{return_id}"]')
            assert rma in await row.inner_text()
            await _screenshot(page, "console-returns.png")
            await page.goto(f"{base}/orders/{order_id}")
            returns_table = await page.locator("#order-returns-table").inner_text()
            assert rma in returns_table and "Dock Road" in returns_table  # the return address

            # mark it received, then refund it from the returns page's link
            await page.goto(base + "/returns?status=authorized")
            row = page.locator(f'#returns-list tr[data-return="{return_id}"]')
            await row.get_by_role("button", name="Mark received").click()
            await _shown(page, "ok", f"receive return {return_id}")
            await page.goto(base + "/returns?status=received")
            await _axe_into(page, problems, "/returns?status=received")
            row = page.locator(f'#returns-list tr[data-return="{return_id}"]')
            await row.get_by_role("link", name="Refund").click()
            await page.wait_for_url(re.compile(rf"/orders/{order_id}\?return_id={return_id}"))
            assert await page.locator("#refund-return").input_value() == return_id
            await page.locator("#refund-amount").fill("12.34")
            await page.locator("#refund").get_by_role("button", name="Refund").click()
            await _shown(page, "ok", "issue refund")
            refunds = page.locator("#order-refunds-table tbody tr")
            assert await refunds.count() == 1
            assert "12.34 USD" in await refunds.inner_text()
            done = await _read(urls, "order", f"/v1/returns/{return_id}")
            assert done["status"] == "refunded"

            # more than what is left of what was paid: refused, naming the amount; no refund
            await page.goto(f"{base}/orders/{order_id}")
            await page.locator("#refund summary").click()
            await page.locator("#refund-amount").fill("1000.00")
            await page.locator("#refund-reason").select_option("changed_mind")
            await page.locator("#refund").get_by_role("button", name="Refund").click()
            text = await _shown(page, "error", "issue refund")
            assert "409" in text, text
            assert re.search(r"^amount: refund of 1000\.00 USD exceeds", text, re.M), text
            assert await page.locator("#order-refunds-table tbody tr").count() == 1
            listed = await _read(urls, "order", f"/v1/orders/{order_id}/refunds")
            assert [r["amount"] for r in listed["items"]] == ["12.34"]

            # a complaint with a blank summary is refused naming the field; nothing filed
            await page.locator("#new-complaint summary").click()
            await page.locator("#complaint-tier").select_option("urgent")
            await page.locator("#complaint-summary").fill("   ")  # passes `required`
            await page.get_by_role("button", name="File a complaint").click()
            text = await _shown(page, "error", "file complaint")
            assert "422" in text and "body.summary" in text, text
            filed = await _read(urls, "order", "/v1/complaints", order_id=order_id)
            assert filed["items"] == []
            await page.goto(f"{base}/orders/{order_id}")
            await page.locator("#new-complaint summary").click()
            await page.locator("#complaint-tier").select_option("urgent")
            await page.locator("#complaint-summary").fill("Mug arrived in pieces")
            await page.get_by_role("button", name="File a complaint").click()
            await _shown(page, "ok", "file complaint")
            [complaint] = (await _read(urls, "order", "/v1/complaints", order_id=order_id))["items"]
            assert complaint["tier"] == "urgent"

            # answer it, refuse a blank resolution, then resolve it
            await page.goto(base + "/complaints")
            card = page.locator(f'article[data-complaint="{complaint["id"]}"]')
            assert "Mug arrived in pieces" in await card.inner_text()
            await _axe_into(page, problems, "/complaints")
            await card.get_by_label("Response").fill("Sorry: a refund is on its way.")
            await card.get_by_role("button", name="Respond").click()
            await _shown(page, "ok", "respond to complaint")
            card = page.locator(f'article[data-complaint="{complaint["id"]}"]')
            assert "Sorry: a refund is on its way." in await card.inner_text()
            await _screenshot(page, "console-complaints.png")
            await card.get_by_label("Resolution").fill("  ")
            await card.get_by_role("button", name="Resolve").click()
            text = await _shown(page, "error", "resolve complaint")
            assert "body.resolution" in text, text
            still = await _read(urls, "order", f"/v1/complaints/{complaint['id']}")
            assert still["resolved_at"] is None
            card = page.locator(f'article[data-complaint="{complaint["id"]}"]')
            await card.get_by_label("Resolution").fill("Refunded 12.34 USD for the broken mug")
            await card.get_by_role("button", name="Resolve").click()
            await _shown(page, "ok", "resolve complaint")
            assert await page.locator(f'article[data-complaint="{complaint["id"]}"]').count() == 0
            await page.goto(base + "/complaints?open=false")
            card = page.locator(f'article[data-complaint="{complaint["id"]}"]')
            assert "Refunded 12.34 USD for the broken mug" in await card.inner_text()
            await _axe_into(page, problems, "/complaints?open=false")

            await page.goto(f"{base}/orders/{order_id}")
            assert await page.locator(".flash.error").count() == 0
            await page.locator("#aftersales").scroll_into_view_if_needed()
            await _screenshot(page, "console-order-aftersales.png", full_page=False)
            await _open_forms(page)
            await _axe_into(page, problems, "/orders/{id}")
            await page.goto(base + "/audit")
            log = await page.locator("#audit-table").inner_text()
            for words in (
                f"open return\t{order_id}\tok",
                f"authorize return\t{return_id}\tok",
                f"receive return\t{return_id}\tok",
                f"issue refund\t{order_id}\tok",
                f"issue refund\t{order_id}\terror",
                f"file complaint\t{order_id}\terror",
                f"file complaint\t{order_id}\tok",
                f"respond to complaint\t{complaint['id']}\tok",
                f"resolve complaint\t{complaint['id']}\terror",
                f"resolve complaint\t{complaint['id']}\tok",
            ):
                assert words in log, (words, log)
            assert not problems, problems
            assert not script_errors, script_errors
        finally:
            await browser.close()


async def _shown(page: Page, kind: str, words: str) -> str:
    """The text of the flash of this kind that says `words`, once the page shows it."""
    flash = page.locator(f".flash.{kind}", has_text=words).last
    await flash.wait_for()
    return await flash.inner_text()


async def _screenshot(page: Page, name: str, full_page: bool = True) -> None:
    """Kept in `DROPSHIP_CONSOLE_SCREENSHOTS` when it is set (the README's pictures)."""
    if folder := os.environ.get("DROPSHIP_CONSOLE_SCREENSHOTS"):
        await page.screenshot(path=f"{folder}/{name}", full_page=full_page)


async def _axe_into(page: Page, problems: dict[str, list[str]], name: str) -> None:
    if found := await _axe(page):
        problems[name] = found
