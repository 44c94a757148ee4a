"""The metrics dashboard in a real headless Chromium: empty states, charts with data, live refresh.

A screenshot of each state goes to `test-artifacts/` (gitignored) for a human to look at.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.async_api import ConsoleMessage, Page, async_playwright

from services.metrics.app import create_app
from services.metrics.settings import MetricsSettings
from shared.infra import free_port
from shared.testing import eventually
from tests.support import metrics_history as h
from tests.support.data import API_KEY
from tests.support.kafka import publish_envelopes
from tests.support.services import ROOT, served

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
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = [
    pytest.mark.parametrize("backend", ["sqlite"]),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing: make sysdeps"),
]


async def _open(page: Page, url: str, problems: list[str]) -> None:
    await page.goto(url)
    try:
        await page.wait_for_selector("body[data-loaded=true]", timeout=20_000)
    except Exception as exc:
        raise AssertionError(f"dashboard did not load: {problems}") from exc


async def _card(page: Page, label: str) -> str:
    return (await page.locator(f'[data-kpi="{label}"] .value').inner_text()).strip()


async def test_the_dashboard_shows_empty_states_then_charts_and_refreshes_live(
    database_url, settings_for, broker
):
    port = free_port()
    settings = settings_for(MetricsSettings, await database_url("metrics"), port=port)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    requests_elsewhere: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(f"console {message.type}: {message.text}")

    async with served(create_app, settings, port) as svc, async_playwright() as pw:
        svc.client.headers.update(API_KEY)  # the metrics API takes admin keys
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("console", on_console)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "request",
                lambda r: None if r.url.startswith(svc.url) else requests_elsewhere.append(r.url),
            )

            # an empty database: every panel says what will appear, nothing breaks
            await _open(page, f"{svc.url}/?key={API_KEY['X-API-Key']}&refresh=1", problems)
            assert await _card(page, "Orders") == "0"
            assert await page.locator("#orders-chart .empty").count() == 1
            assert "first order" in await page.locator("#orders-chart .empty").inner_text()
            assert await page.locator("#ranking .empty").count() == 1
            await page.screenshot(
                path=str(ARTIFACTS / "metrics-dashboard-empty.png"), full_page=True
            )

            # an order placed now shows up without a reload (live refresh)
            now = datetime.now(UTC)
            await publish_envelopes(
                broker.bootstrap, [h.placed("ord_now", "storefront", "USD", now, ("n1", 2, "9.99"))]
            )
            orders_shown = "document.querySelector('[data-kpi=\"Orders\"] .value').textContent"
            await page.wait_for_function(f"() => {orders_shown} === '1'", timeout=30_000)
            assert "$19.98" in await _card(page, "Sales (GMV)")

            # the known history: charts drawn with its numbers
            await publish_envelopes(broker.bootstrap, h.history())

            async def applied() -> bool:
                counts = (await svc.client.get("/v1/events/counts")).json()
                return sum(counts.values()) == h.DISTINCT_EVENTS + 1

            await eventually(applied, what="history applied")
            await _open(
                page,
                f"{svc.url}/?key={API_KEY['X-API-Key']}&from=2026-03-01&to=2026-03-03",
                problems,
            )
            assert await _card(page, "Orders") == "5"
            assert await _card(page, "Shipped on time") == "33.3%"
            assert await page.locator("#orders-chart rect.bar").count() == 3
            titles = await page.locator("#orders-chart rect.bar title").all_text_contents()
            assert titles == ["2026-03-01: 3", "2026-03-02: 2", "2026-03-03: 0"]
            assert await page.locator("#gmv-chart path").count() == 2  # EUR and USD
            assert await page.locator("#ontime-chart circle.point").count() == 2  # days with due
            reasons = await page.locator("#delays-chart text").all_text_contents()
            assert "No tracking by the ship-by date" in reasons
            assert "At risk of missing the ship-by date" in reasons
            rows = page.locator("#ranking tbody tr")
            assert [await r.get_attribute("data-supplier") for r in await rows.all()] == [
                h.S1,
                h.S2,
            ]
            assert "50%" in await rows.first.inner_text()
            await page.screenshot(path=str(ARTIFACTS / "metrics-dashboard.png"), full_page=True)
        finally:
            await browser.close()
    assert problems == []
    assert requests_elsewhere == []


async def test_the_after_sales_panel_shows_returns_refunds_and_complaints(
    database_url, settings_for, broker
):
    from tests.support import after_sales_history as a

    port = free_port()
    settings = settings_for(MetricsSettings, await database_url("metrics"), port=port)
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    async with served(create_app, settings, port) as svc, async_playwright() as pw:
        svc.client.headers.update(API_KEY)  # the metrics API takes admin keys
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1400, "height": 1400})
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            key = API_KEY["X-API-Key"]
            await _open(page, f"{svc.url}/?key={key}", problems)
            assert await _card(page, "Return rate") == "–"
            assert "No returns" in await page.locator("#returns-chart .empty").inner_text()
            assert "No complaints" in await page.locator("#tiers .empty").inner_text()

            await publish_envelopes(broker.bootstrap, a.history())

            async def applied() -> bool:
                counts = (await svc.client.get("/v1/events/counts")).json()
                return sum(counts.values()) == a.DISTINCT_EVENTS

            await eventually(applied, what="history applied")
            await _open(page, f"{svc.url}/?key={key}&from=2026-03-01&to=2026-03-03", problems)
            assert await _card(page, "Return rate") == "66.7%"
            refunded = await _card(page, "Refunded")
            assert "$22.55" in refunded and "€7.78" in refunded
            assert await _card(page, "Charged back to suppliers") == "$12.50"
            assert await _card(page, "Complaints") == "3"
            assert await _card(page, "First response") == "4.0 h"
            assert await _card(page, "Answered in time") == "66.7%"
            assert await _card(page, "Resolved in time") == "33.3%"
            reasons = await page.locator("#returns-chart text").all_text_contents()
            assert "Damaged in transit" in reasons and "Not as described" in reasons
            tiers = page.locator("#tiers tbody tr")
            assert [await r.get_attribute("data-tier") for r in await tiers.all()] == [
                "normal",
                "urgent",
                "major",
            ]
            assert "0%" in await page.locator('#tiers tr[data-tier="urgent"]').inner_text()
            await page.screenshot(
                path=str(ARTIFACTS / "metrics-dashboard-after-sales.png"), full_page=True
            )
        finally:
            await browser.close()
    assert problems == []
